"""Starting and stopping the grid's child processes."""

import contextlib
import signal
import subprocess
from pathlib import Path

from acdaemon.notify import child_environment

#: Seconds to wait for any process to become ready.
READY_TIMEOUT = 60.0
#: Seconds a process gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


class GridError(RuntimeError):
    """A grid process could not be started; the message says why (with its log)."""



def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a process in its own session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**child_environment(), **(env or {})}, start_new_session=True)


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
