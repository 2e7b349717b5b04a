"""Starting and stopping the grid's child processes."""

import contextlib
import os
import signal
import subprocess
from pathlib import Path

#: Seconds to wait for any process to become ready.
READY_TIMEOUT = 60.0
#: Seconds a process gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


class GridError(RuntimeError):
    """A grid process could not be started; the message says why (with its log)."""


#: Variables a child must not inherit from whoever runs the grid.
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a process in its own session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    inherited = {key: value for key, value in os.environ.items() if key not in _NOT_INHERITED}
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**inherited, **(env or {})}, start_new_session=True)


def stop_process(process: subprocess.Popen, signum: int = signal.SIGTERM) -> None:
    """Signal a process and reap it; SIGKILL if it outlives ``STOP_TIMEOUT``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
