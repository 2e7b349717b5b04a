"""Envelopes on their way to the controller, delivered exactly once, in order.

Each write is one transaction: push the envelopes, record the sequence number
of the last one in ``outseq``, forget the commands that are now finished
(``LREM`` from the inflight list) and ring the bell. If the connection breaks
mid-write, the agent reads ``outseq`` after reconnecting and knows exactly
which envelopes arrived; it sends the rest again. While the bus is away,
envelopes wait here, in memory: job results always, log and stats envelopes
only while the spool is under ``MAX_SPOOL_BYTES`` (``has_room``), so a long
outage costs messages for the controller's log, never results and never
unbounded memory.
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

#: Envelopes per transaction, and bytes (a transaction holds at least one envelope).
WRITE_BATCH = 512
WRITE_BATCH_BYTES = 4 * 1024 * 1024
#: Envelopes kept while the bus is away; beyond this the oldest are dropped.
MAX_WAITING = 200_000
#: Bytes of waiting envelopes above which optional ones (logs, stats) are refused.
MAX_SPOOL_BYTES = 64 * 1024 * 1024


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
        self._bytes = 0
        self._put = 0  # entries ever put
        self._gone = 0  # entries ever delivered (or dropped)
        self._delivered = trio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def spooled_bytes(self) -> int:
        """Bytes of the envelopes waiting to reach the bus."""
        return self._bytes

    def has_room(self, size: int) -> bool:
        """Whether an optional envelope of ``size`` bytes may still be spooled."""
        return self._bytes + size <= MAX_SPOOL_BYTES

    def put(self, envelope: str, finished_command: bytes | None = None) -> int:
        """Queue an envelope; ``finished_command`` leaves the inflight list with it.
        Returns its place, for ``delivered``."""
        if len(self._waiting) >= MAX_WAITING:
            self._bytes -= len(self._waiting.popleft().envelope or "")
            self._gone += 1
            self.dropped += 1
            if self.dropped % 10_000 == 1:
                log.error("outbox full while the bus is away: dropped %d envelopes so far", self.dropped)
        self._waiting.append(_Entry(envelope, finished_command))
        self._bytes += len(envelope)
        self._wakeup.set()
        self._put += 1
        return self._put

    async def delivered(self, place: int | None = None) -> None:
        """Wait until every envelope put so far (or up to ``place``, as ``put`` returned it) is on the bus."""
        place = self._put if place is None else place
        while self._gone < place:
            await self._delivered.wait()

    def put_removal(self, finished_command: bytes) -> None:
        """Take a command off the inflight list without telling the controller anything."""
        self._waiting.append(_Entry(None, finished_command))
        self._wakeup.set()
        self._put += 1

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
                self.bus.refused(exc, "our outbox write")
                await trio.sleep(refused.next())

    async def _write(self) -> None:
        if self._check_delivered:
            await self._forget_delivered()
            if not self._waiting:
                return
        batch, size = [], 0
        for entry in itertools.islice(self._waiting, WRITE_BATCH):
            if batch and size > WRITE_BATCH_BYTES:
                break
            batch.append(entry)
            size += len(entry.envelope or "")
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
            self._bytes -= len(self._waiting.popleft().envelope or "")
        self._gone += len(batch)
        for raw in finished:
            self.on_delivered(raw)
        self._announce_delivered()

    async def _forget_delivered(self) -> None:
        """After a reconnection: drop what the bus already has, per ``outseq``."""
        delivered = int(await self.bus.execute("GET", self.keys.outbox_seq) or 0)
        while self._waiting and self._waiting[0].seq and self._waiting[0].seq <= delivered:
            entry = self._waiting.popleft()
            self._gone += 1
            self._bytes -= len(entry.envelope or "")
            if entry.finished_command is not None:
                self.on_delivered(entry.finished_command)
        self._last_seq = max(self._last_seq, delivered)
        self._check_delivered = False
        self._announce_delivered()

    def _announce_delivered(self) -> None:
        self._delivered.set()
        self._delivered = trio.Event()
