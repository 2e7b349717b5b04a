"""One external process: its own process group, stdin fed, stdout and stderr
parsed into level messages, and an end that leaves no process behind.

A kill or a timeout sends SIGTERM to the whole group, then SIGKILL after a
grace period. When the main process ends by itself, whatever it left running
in its group is stopped the same way: no orphan survives a job.

The group is signalled while its leader is still unreaped (its exit is seen
through a pidfd, without reaping), so the group id cannot have been handed to
another process in the meantime. A process that leaves the group on purpose
(``setsid``) is found and stopped once the group is empty (``agent/reaper.py``);
if it keeps our pipes open meanwhile, reading stops after the grace period.
"""

import contextlib
import math
import os
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import psutil
import trio

from agent.reaper import Reaper
from protocol.errors import shown
from protocol.levels import STDERR, STDOUT
from protocol.parser import Message, OutputParser

#: Seconds between SIGTERM and SIGKILL.
DEFAULT_GRACE = 5.0
#: Bytes read from a job's output at a time: each read yields to the agent's other tasks, so a job
#: flooding its output delays an answer by the work of one chunk at the most, and an answer waits for
#: three or four such steps. 8 KiB of short lines is about a millisecond of parsing and logging; 64 KiB
#: took 15-25 ms (``bench.flood``: the flooding agent's ping p99 34-40 ms then, 8-9 ms now; 4 KiB gives
#: 7 ms there but more small writes, and a bystander's p99 goes from 4 to 5 ms).
_CHUNK = 8 * 1024
#: How often to look whether a stopped group is empty yet (only while stopping one).
_GROUP_POLL = 0.05


class SpawnError(Exception):
    """The process could not be started; the message says why, for the job's data."""


class Ending(Enum):
    """How a run ended: by itself, past its ``max_time``, or killed."""

    EXITED = "exited"
    TIMEOUT = "timeout"
    KILLED = "killed"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What to start: argv, working directory, environment and stdin (worked out before the run waits)."""

    argv: tuple[str, ...]
    cwd: str | None
    env: dict[str, str]
    stdin: bytes = b""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a process ended, and its exit status."""

    ending: Ending
    returncode: int


class OutputSink(Protocol):
    """Where the messages of a process go. ``room`` returns once the sink can take more:
    a reader waits on it, so a process that writes faster than its output is stored is slowed down."""

    def add(self, stream_level: int, messages: Sequence[Message]) -> None: ...

    async def room(self) -> None: ...


class ProcessRun:
    """Runs one process, its output going to ``sink``.

    The child is started with ``subprocess.Popen`` right in the event loop
    (vfork and exec take a fraction of a millisecond; a worker thread would
    cost more than it saves), its pipes are trio streams, and its exit is
    awaited on a pidfd.
    """

    def __init__(self, spec: ProcessSpec, sink: OutputSink, grace: float = DEFAULT_GRACE,
                 reaper: Reaper | None = None, strays: Callable[[], Awaitable[object]] | None = None) -> None:
        """``reaper``: the agent's, told which pid is ours to wait for; ``strays``: stops what the run left
        outside its process group, once the group is empty."""
        self.spec = spec
        self.sink = sink
        self.grace = grace
        self.reaper = reaper
        self.strays = strays
        self.pid: int | None = None
        self._stop = trio.CancelScope()
        self._killed = False
        self._popen: subprocess.Popen | None = None
        self._pidfd: int | None = None
        self._streams: list[trio.lowlevel.FdStream] = []

    def kill(self) -> None:
        """Ask the run to end now (TERM, then KILL after the grace period)."""
        self._killed = True
        self._stop.cancel()

    def start(self) -> int:
        """Start the process; return its pid. Raises ``SpawnError`` saying why it could not start."""
        spec = self.spec
        binary = spec.argv[0]
        if any("\0" in text for text in (*spec.argv, spec.cwd or "")):
            raise SpawnError(f"cannot run {shown(binary)}: an argument or the working directory contains a NUL byte")
        _check_encodable(spec)
        if os.sep not in binary and shutil.which(binary, path=spec.env.get("PATH", os.defpath)) is None:
            raise SpawnError(f"cannot run {shown(binary)}: not found on PATH")
        if spec.cwd and not os.path.isdir(spec.cwd):
            raise SpawnError(f"cannot run {shown(binary)}: working directory {shown(spec.cwd)} does not exist")
        child_ends: list[int] = []
        ours: list[int] = []
        try:
            for index in range(3 if spec.stdin else 2):
                read, write = os.pipe()
                child_ends.append(read if index == 2 else write)
                ours.append(write if index == 2 else read)
            self._popen = subprocess.Popen(
                spec.argv, stdin=child_ends[2] if spec.stdin else subprocess.DEVNULL, stdout=child_ends[0],
                stderr=child_ends[1], cwd=spec.cwd or None, env=spec.env, start_new_session=True)
        except BaseException as exc:  # whatever stops the start, no descriptor of it stays open
            for fd in ours:
                os.close(fd)
            if isinstance(exc, OSError):
                raise SpawnError(f"cannot run {shown(binary)}: {exc.strerror or exc}") from None
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        self._streams = [trio.lowlevel.FdStream(fd) for fd in ours]
        self.pid = self._popen.pid
        if self.reaper is not None:
            self.reaper.managed.add(self.pid)
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(self.pid)
        return self.pid

    async def wait(self, max_time: float = 0) -> Outcome:
        """Run to the end; ``max_time`` > 0 is a timeout."""
        streams_closed = _Countdown(2)
        try:
            async with trio.open_nursery() as io:
                io.start_soon(self._read, self._streams[0], STDOUT, streams_closed)
                io.start_soon(self._read, self._streams[1], STDERR, streams_closed)
                if len(self._streams) == 3:
                    io.start_soon(self._feed, self._streams[2], self.spec.stdin)
                try:
                    with trio.move_on_after(max_time if max_time > 0 else math.inf) as deadline, self._stop:
                        await self._exited()
                finally:
                    with trio.CancelScope(shield=True):  # even when the agent itself is stopping
                        await self._end(streams_closed)
                    io.cancel_scope.cancel()
        finally:
            for stream in self._streams:
                stream.close()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        assert self._popen is not None  # wait() follows start()
        returncode = self._popen.returncode
        if self._killed:
            return Outcome(Ending.KILLED, returncode)
        if deadline.cancelled_caught:
            return Outcome(Ending.TIMEOUT, returncode)
        return Outcome(Ending.EXITED, returncode)

    async def _end(self, streams_closed: "_Countdown") -> None:
        pgid, popen = self.pid, self._popen
        assert pgid is not None and popen is not None  # _end() runs in wait(), after start()
        if not self._has_exited():
            await self._terminate(pgid)
        _signal_group(pgid, signal.SIGTERM)  # what it left behind; its unreaped leader still holds the group id
        popen.wait()  # it has exited: this only reaps it
        if self.reaper is not None:
            self.reaper.managed.discard(pgid)
        if not await _group_empty(pgid, self.grace):
            _signal_group(pgid, signal.SIGKILL)
            await _group_empty(pgid, self.grace)
        if self.strays is not None:
            await self.strays()
        if not await streams_closed.wait(self.grace):
            _signal_group(pgid, signal.SIGKILL)
            await streams_closed.wait(self.grace)

    async def _exited(self) -> None:
        """Wait until the main process has exited, without reaping it."""
        if self._pidfd is not None:
            await trio.lowlevel.wait_readable(self._pidfd)
            return
        while not self._has_exited():  # no pidfd (very old kernel): look now and then
            await trio.sleep(_GROUP_POLL)

    def _has_exited(self) -> bool:
        try:
            if self._pidfd is not None:
                return os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
            assert self.pid is not None  # asked only once start() has set it
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
        except ChildProcessError:
            return True

    async def _terminate(self, pgid: int) -> None:
        """TERM the group, KILL it if the main process outlives the grace period."""
        _signal_group(pgid, signal.SIGTERM)
        with trio.move_on_after(self.grace):
            await self._exited()
        if not self._has_exited():
            _signal_group(pgid, signal.SIGKILL)
            await self._exited()

    async def _feed(self, stdin: trio.lowlevel.FdStream, data: bytes) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stdin.send_all(data)  # a process may stop reading: that is its business
        await stdin.aclose()

    async def _read(self, stream: trio.lowlevel.FdStream, level: int, closed: "_Countdown") -> None:
        parser = OutputParser(level)
        sink = self.sink
        while chunk := await stream.receive_some(_CHUNK):
            messages = parser.feed(chunk)
            if messages:
                sink.add(level, messages)
                await sink.room()
        sink.add(level, parser.close())
        closed.count_down()


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
        if self._done.is_set():
            return True
        with trio.move_on_after(timeout):
            await self._done.wait()
        return self._done.is_set()


async def stop_leftover_group(pgid: int, started: float | None, grace: float = DEFAULT_GRACE) -> bool:
    """Stop the process group a previous agent left running; True if there was one.

    ``started`` is the leader's recorded start time: a live process with that
    pid but another start time is someone else's, and is left alone.
    """
    try:
        leader = psutil.Process(pgid)
        if started is not None and abs(leader.create_time() - started) > 0.05:
            return False
    except psutil.NoSuchProcess:
        pass  # the leader is gone; members of its group may live on
    except psutil.AccessDenied:
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    if not await _group_empty(pgid, grace):
        _signal_group(pgid, signal.SIGKILL)
        await _group_empty(pgid, grace)
    return True


def _check_encodable(spec: ProcessSpec) -> None:
    """Refuse text the operating system cannot take (a lone surrogate, valid in JSON, is not a file name)."""
    texts = [("an argument", text) for text in spec.argv] + [("the working directory", spec.cwd or "")]
    texts += [("the environment", text) for pair in spec.env.items() for text in pair]
    for what, text in texts:
        try:
            os.fsencode(text)
        except UnicodeEncodeError as exc:
            raise SpawnError(f"cannot run {shown(spec.argv[0])}: {what} holds text that cannot be encoded "
                             f"({exc.reason} at position {exc.start}: {shown(text)})") from None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_gone(pgid: int) -> bool:
    """No live process is left in the group (zombies waiting for init to reap them do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a member changed its uid: it is still there
    return not _has_live_member(pgid)


def _has_live_member(pgid: int) -> bool:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue
        state, _, group = stat[stat.rindex(b")") + 2:].split(b" ", 3)[:3]  # after "pid (comm) "
        if int(group) == pgid and state not in (b"Z", b"X"):
            return True
    return False


async def _group_empty(pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the group to have no process left."""
    if _group_gone(pgid):
        return True
    with trio.move_on_after(timeout):
        while not _group_gone(pgid):
            await trio.sleep(_GROUP_POLL)
        return True
    return False
