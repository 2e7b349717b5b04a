"""Running the command lines configured in ``[events]`` when an agent registers.

Only the controller whose drain took the registration runs the handler, so
each registration runs it once. A handler is run without a shell, with a
timeout, a few at a time; whatever goes wrong with it is logged, never fatal.
"""

import logging

import trio

from acdaemon.notify import child_environment
from controller.config import ControllerConfig, event_argv

log = logging.getLogger(__name__)

#: Handlers running at once; more wait their turn.
CONCURRENT_HANDLERS = 8
#: Characters of a failed handler's output kept in the log.
OUTPUT_SAMPLE = 500


class EventHandlers:
    """Runs the ``[events]`` command lines, a few at a time, each with a timeout; failures are logged."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self._limiter = trio.CapacityLimiter(CONCURRENT_HANDLERS)
        self._nursery: trio.Nursery | None = None
        self.failed = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the handlers' tasks; runs until cancelled. Start it with ``nursery.start``."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def fire(self, event: str, gid: int, nid: int) -> None:
        """Start the handler of ``event`` for agent ``gid:nid``, if one is configured."""
        command_line = self.config.event_handler(event)
        if command_line and self._nursery is not None:
            self._nursery.start_soon(self._run_handler, event, event_argv(command_line, gid, nid), gid, nid)

    async def _run_handler(self, event: str, argv: list[str], gid: int, nid: int) -> None:
        what = f"{event} handler {argv[0]!r} for agent {gid}:{nid}"
        env = {**child_environment(), "AC_EVENT": event, "AC_GID": str(gid), "AC_NID": str(nid)}
        async with self._limiter:
            with trio.move_on_after(self.config.handler_timeout) as scope:
                try:
                    done = await trio.run_process(argv, stdin=b"", capture_stdout=True, capture_stderr=True,
                                                  check=False, env=env)
                except (OSError, ValueError) as exc:
                    self.failed += 1
                    log.error("%s could not start: %s", what, exc)
                    return
        if scope.cancelled_caught:
            self.failed += 1
            log.error("%s was killed after %g s", what, self.config.handler_timeout)
        elif done.returncode != 0:
            self.failed += 1
            output = (done.stderr or done.stdout).decode("utf-8", "replace")[-OUTPUT_SAMPLE:].strip()
            log.error("%s failed with %s: %s", what, _exit_status(done.returncode), output or "(no output)")
        else:
            log.info("%s done", what)


def _exit_status(returncode: int) -> str:
    return f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"

