"""One external process: its own process group, stdin fed, stdout and stderr
parsed into level messages, and an end that leaves no process behind.

A kill or a timeout sends SIGTERM to the whole group, then SIGKILL after a
grace period. When the main process ends by itself, whatever it left running
in its group is stopped the same way: no orphan survives a job.
"""

import contextlib
import math
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import trio

from protocol.levels import STDERR, STDOUT
from protocol.parser import Message, OutputParser

#: Seconds between SIGTERM and SIGKILL.
DEFAULT_GRACE = 5.0
_CHUNK = 64 * 1024


class SpawnError(Exception):
    """The process could not be started; the message says why, for the job's data."""


class Ending(Enum):
    EXITED = "exited"
    TIMEOUT = "timeout"
    KILLED = "killed"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    argv: tuple[str, ...]
    cwd: str | None
    env: dict[str, str]
    stdin: bytes = b""


@dataclass(frozen=True, slots=True)
class Outcome:
    ending: Ending
    returncode: int


class ProcessRun:
    """Runs one process; ``on_message(stream_level, message)`` gets its output as it comes."""

    def __init__(self, spec: ProcessSpec, on_message: Callable[[int, Message], None],
                 grace: float = DEFAULT_GRACE) -> None:
        self.spec = spec
        self.on_message = on_message
        self.grace = grace
        self.pid: int | None = None
        self._stop = trio.CancelScope()
        self._killed = False
        self._process: trio.Process | None = None

    def kill(self) -> None:
        """Ask the run to end now (TERM, then KILL after the grace period)."""
        self._killed = True
        self._stop.cancel()

    async def start(self) -> int:
        """Start the process; return its pid. Raises ``SpawnError`` saying why it could not start."""
        self._process = await self._spawn()
        self.pid = self._process.pid
        return self.pid

    async def wait(self, max_time: float = 0) -> Outcome:
        """Run to the end; ``max_time`` > 0 is a timeout."""
        process = self._process
        streams_closed = _Countdown(2)
        async with trio.open_nursery() as io:
            io.start_soon(self._feed, process.stdin, self.spec.stdin)
            io.start_soon(self._read, process.stdout, STDOUT, streams_closed)
            io.start_soon(self._read, process.stderr, STDERR, streams_closed)
            with trio.move_on_after(max_time if max_time > 0 else math.inf) as deadline, self._stop:
                await process.wait()
            if process.returncode is None:
                await self._stop_group(process)
            else:
                self._signal_group(process.pid, signal.SIGTERM)  # whatever it left behind
            if not await streams_closed.wait(self.grace):
                self._signal_group(process.pid, signal.SIGKILL)
                await streams_closed.wait(self.grace)  # a process that left the group may hold our pipes
            io.cancel_scope.cancel()
        if self._killed:
            return Outcome(Ending.KILLED, process.returncode)
        if deadline.cancelled_caught:
            return Outcome(Ending.TIMEOUT, process.returncode)
        return Outcome(Ending.EXITED, process.returncode)

    async def _spawn(self) -> trio.Process:
        spec = self.spec
        binary = spec.argv[0]
        if os.sep not in binary and shutil.which(binary, path=spec.env.get("PATH", os.defpath)) is None:
            raise SpawnError(f"cannot run {binary!r}: not found on PATH")
        if spec.cwd and not os.path.isdir(spec.cwd):
            raise SpawnError(f"cannot run {binary!r}: working directory {spec.cwd!r} does not exist")
        try:
            return await trio.lowlevel.open_process(
                list(spec.argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=spec.cwd or None, env=spec.env, start_new_session=True)
        except OSError as exc:
            raise SpawnError(f"cannot run {binary!r}: {exc.strerror or exc}") from None

    async def _feed(self, stdin: trio.abc.SendStream, data: bytes) -> None:
        async with stdin:
            if data:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stdin.send_all(data)  # a process may stop reading: that is its business

    async def _read(self, stream: trio.abc.ReceiveStream, level: int, closed: "_Countdown") -> None:
        parser = OutputParser(level)
        async with stream:
            while chunk := await stream.receive_some(_CHUNK):
                for message in parser.feed(chunk):
                    self.on_message(level, message)
        for message in parser.close():
            self.on_message(level, message)
        closed.count_down()

    async def _stop_group(self, process: trio.Process) -> None:
        with trio.CancelScope(shield=True):
            self._signal_group(process.pid, signal.SIGTERM)
            with trio.move_on_after(self.grace):
                await process.wait()
            self._signal_group(process.pid, signal.SIGKILL)
            await process.wait()

    @staticmethod
    def _signal_group(pgid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


class _Countdown:
    """An event that fires after ``count`` calls to ``count_down``."""

    def __init__(self, count: int) -> None:
        self._left = count
        self._done = trio.Event()

    def count_down(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._done.set()

    async def wait(self, timeout: float) -> bool:
        """True if it fired within ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            await self._done.wait()
        return self._done.is_set()
