"""Envelopes on their way to the controller, delivered exactly once, in order.

Each write is one transaction: push the envelopes, record the sequence number
of the last one in ``outseq``, forget the commands that are now finished
(``LREM`` from the inflight list) and ring the bell. If the connection breaks
mid-write, the agent reads ``outseq`` after reconnecting and knows exactly
which envelopes arrived; it sends the rest again. While the bus is away,
envelopes wait here (up to a bound).
"""

import collections
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from bus import Backoff, Bus, ConnectionLost, ReplyError
from protocol.keys import AgentKeys

log = logging.getLogger(__name__)

#: Envelopes per transaction.
WRITE_BATCH = 512
#: Envelopes kept while the bus is away; beyond this the oldest are dropped.
MAX_WAITING = 200_000


@dataclass(slots=True)
class _Entry:
    envelope: str | None
    finished_command: bytes | None  # the raw command to take off the inflight list
    seq: int = 0


class Outbox:
    """``on_delivered(raw)`` is called for each finished command once it left the inflight list."""

    def __init__(self, bus: Bus, agent_keys: AgentKeys, on_delivered: Callable[[bytes], None]) -> None:
        self.bus = bus
        self.keys = agent_keys
        self.on_delivered = on_delivered
        self._waiting: collections.deque[_Entry] = collections.deque()
        self._wakeup = trio.Event()
        self._last_seq = 0
        self._check_delivered = True  # read outseq before the next write
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, envelope: str, finished_command: bytes | None = None) -> None:
        """Queue an envelope; ``finished_command`` leaves the inflight list with it."""
        if len(self._waiting) >= MAX_WAITING:
            self._waiting.popleft()
            self.dropped += 1
            if self.dropped % 10_000 == 1:
                log.error("outbox full while the bus is away: dropped %d envelopes so far", self.dropped)
        self._waiting.append(_Entry(envelope, finished_command))
        self._wakeup.set()

    def put_removal(self, finished_command: bytes) -> None:
        """Take a command off the inflight list without telling the controller anything."""
        self._waiting.append(_Entry(None, finished_command))
        self._wakeup.set()

    async def run(self) -> None:
        refused = Backoff(first=0.5, cap=30)
        while True:
            if not self._waiting:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            try:
                await self._write()
                refused.reset()
            except ConnectionLost as exc:
                log.warning("outbox write interrupted: %s", exc)
                self._check_delivered = True
                await self.bus.connection()
            except ReplyError as exc:
                log.error("the bus refused our outbox write (%s); retrying", exc)
                await trio.sleep(refused.next())

    async def _write(self) -> None:
        if self._check_delivered:
            await self._forget_delivered()
        batch = list(itertools.islice(self._waiting, WRITE_BATCH))
        for entry in batch:
            if not entry.seq:
                self._last_seq += 1
                entry.seq = self._last_seq
        envelopes = [entry.envelope for entry in batch if entry.envelope is not None]
        finished = [entry.finished_command for entry in batch if entry.finished_command is not None]
        commands: list[tuple] = [("MULTI",), ("SET", self.keys.outbox_seq, batch[-1].seq)]
        commands += [("LREM", self.keys.inflight, 1, raw) for raw in finished]
        if envelopes:
            commands += [("RPUSH", self.keys.outbox, *envelopes), ("PUBLISH", self.keys.bell, "")]
        commands.append(("EXEC",))
        await self.bus.pipeline(commands)
        for _ in batch:
            self._waiting.popleft()
        for raw in finished:
            self.on_delivered(raw)

    async def _forget_delivered(self) -> None:
        """After a reconnection: drop what the bus already has, per ``outseq``."""
        delivered = int(await self.bus.execute("GET", self.keys.outbox_seq) or 0)
        while self._waiting and self._waiting[0].seq and self._waiting[0].seq <= delivered:
            entry = self._waiting.popleft()
            if entry.finished_command is not None:
                self.on_delivered(entry.finished_command)
        self._last_seq = max(self._last_seq, delivered)
        self._check_delivered = False
