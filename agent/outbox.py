"""Envelopes on their way to the controller, delivered exactly once.

Each write is one transaction: push the envelopes, record the sequence number
of the last one in ``outseq``, forget the commands that are now finished
(``LREM`` from the inflight list) and ring the bell. If the connection breaks
mid-write, the agent reads ``outseq`` after reconnecting and knows whether
that transaction arrived; if not, it sends the same envelopes again. While
the bus is away, envelopes wait here, in memory: job results always, log and
stats envelopes only while the spool is under ``MAX_SPOOL_BYTES``
(``has_room``), so a long outage costs messages for the controller's log,
never results and never unbounded memory.

Envelopes travel in two lanes, so that answers never queue behind a flood of
log messages:

* *urgent*: job updates, registrations, removals. Written as soon as they
  are put, ahead of any bulk envelope waiting.
* *bulk*: log and stats envelopes. Written only while the controllers keep
  up: the outbox in Redis never holds more than ``BULK_BACKLOG`` of them
  (its length comes back with every write; while bulk envelopes wait, it is
  polled). So an answer put during a flood waits behind at most
  ``BULK_BACKLOG`` envelopes in Redis: a few milliseconds of draining.

One order is kept across lanes: an update of a job waits for the bulk
envelopes that carry that job's messages and were put before it, so a
client that sees a job end has been sent all of its messages.

On each new connection the agent reads ``outseq`` (the outbox on its own, the
intake on its own before it takes a command). Behind what the bus had
confirmed (gone: Redis restarted without persistence; lower: a Sentinel
failover promoted a replica that had not received our last writes), it says
that the bus lost writes of ours: ``on_data_lost`` is called before anything
more is written, so that what it puts first (``put_first``: the jobs the
agent still holds) reaches the bus ahead of their results. ``lock`` is held
while the outbox reads ``outseq`` and writes, so that the uplink can put its
inflight list right (``Uplink.reconcile``) between two writes.

With ``wait_replicas`` (Sentinel), each write is confirmed by ``WAIT``: a
result is then on the replicas before the agent forgets it. Without it, the
last urgent envelopes delivered are kept (``REPLAYABLE``): when ``outseq``
says the bus lost some of them, those are written again. The controller
takes a job update only while the job is open, so one the bus did have after
all is dropped, never taken twice.
"""

import collections
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import trio

from acbus.connection import Connection, ConnectionLost, ReplyError
from acbus.link import Backoff, Bus
from protocol.keys import AgentKeys

log = logging.getLogger(__name__)

#: Envelopes per transaction, and bytes (a transaction holds at least one envelope).
WRITE_BATCH = 512
WRITE_BATCH_BYTES = 4 * 1024 * 1024
#: Envelopes kept while the bus is away; beyond this the oldest are dropped (bulk ones first).
MAX_WAITING = 200_000
#: Bytes of waiting bulk envelopes above which more are refused (``has_room``).
MAX_SPOOL_BYTES = 64 * 1024 * 1024
#: Envelopes the outbox in Redis may hold before bulk envelopes wait for the controllers to drain it.
BULK_BACKLOG = 4
#: Seconds between looks at the outbox's length while bulk envelopes wait for it to drain.
BACKLOG_POLL = 0.005
#: Urgent envelopes kept after delivery, to write again if a failover turns out to have lost them.
REPLAYABLE = 4096


@dataclass(slots=True, eq=False)
class _Entry:
    envelope: str | None
    finished_command: bytes | None  # the raw command to take off the inflight list
    bulk: bool = False
    job: str | None = None  # urgent: the job it updates; it follows the bulk entries of that job put before it
    jobs: frozenset[str] = frozenset()  # bulk: the jobs whose messages it carries
    after: int = 0  # urgent: the number of the last bulk entry it must follow (0: none)
    number: int = 0  # bulk: its number among the bulk entries, in the order they were put
    seq: int = 0  # set when first sent: its place in outseq's numbering
    done: bool = False
    replay: bool = False  # written again after the bus lost it: its command was forgotten already
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.envelope or "")


class Outbox:
    """``on_delivered(raw)`` is called for each finished command once it left the inflight list;
    ``on_data_lost(everything)`` when the bus turns out to have lost writes of ours (``everything``: its data)."""

    def __init__(self, bus: Bus, agent_keys: AgentKeys, on_delivered: Callable[[bytes], None],
                 on_data_lost: Callable[[bool], None] = lambda everything: None) -> None:
        self.bus = bus
        self.keys = agent_keys
        self.on_delivered = on_delivered
        self.on_data_lost = on_data_lost
        self._urgent: collections.deque[_Entry] = collections.deque()
        self._bulk: collections.deque[_Entry] = collections.deque()
        self._bulk_put = 0  # bulk entries ever put: the last one's number
        self._bulk_written = 0  # the number of the newest bulk entry written: all before it are written too
        self._newest_bulk_of: dict[str, int] = {}  # job -> the number of the newest bulk entry carrying it
        self._sending: list[_Entry] = []  # the transaction in flight (sent again as it is after a lost connection)
        self._replayable: collections.deque[_Entry] = collections.deque(maxlen=REPLAYABLE)  # urgent, delivered
        self._wakeup = trio.Event()
        self._last_seq = 0  # the last sequence number given to an entry
        self._delivered_seq = 0  # the last one the bus confirmed it has (0: none yet)
        self._check_delivered = True  # read outseq before the next write
        self._checked_on = 0  # the bus generation (connection) on which outseq was last read
        self.data_losses = 0
        self._backlog = 0  # envelopes in the outbox in Redis, as last seen
        self._bulk_bytes = 0
        self._delivered = trio.Event()
        self.dropped = 0
        self.lock = trio.Lock()

    def __len__(self) -> int:
        return sum(not entry.done for entry in itertools.chain(self._urgent, self._bulk))

    @property
    def spooled_bytes(self) -> int:
        """Bytes of the envelopes waiting to reach the bus."""
        return sum(entry.size for entry in itertools.chain(self._urgent, self._bulk) if not entry.done)

    def has_room(self, size: int) -> bool:
        """Whether an optional (bulk) envelope of ``size`` bytes may still be spooled."""
        return self._bulk_bytes + size <= MAX_SPOOL_BYTES

    def put(self, envelope: str, finished_command: bytes | None = None, job: str | None = None) -> _Entry:
        """Queue an urgent envelope; ``finished_command`` leaves the inflight list with it. An update of
        ``job`` follows that job's bulk envelopes. Returns the entry, for ``delivered``."""
        after = self._newest_bulk_of.get(job, 0) if job is not None else 0
        return self._add(_Entry(envelope, finished_command, job=job, after=after))

    def put_bulk(self, envelope: str, jobs: Iterable[str] = ()) -> _Entry:
        """Queue a log or stats envelope carrying messages of ``jobs``."""
        self._bulk_put += 1
        entry = _Entry(envelope, None, bulk=True, jobs=frozenset(jobs), number=self._bulk_put)
        for job in entry.jobs:
            self._newest_bulk_of[job] = entry.number
        self._bulk_bytes += entry.size
        return self._add(entry)

    def put_first(self, envelope: str) -> None:
        """Queue an urgent envelope ahead of every other."""
        self._urgent.appendleft(_Entry(envelope, None))
        self._wakeup.set()

    def unconfirmed_removals(self) -> list[bytes]:
        """The commands a write now on its way (or cut short) takes off the inflight list: whether the bus
        applied it is not known yet."""
        return [entry.finished_command for entry in self._sending if entry.finished_command is not None]

    def finished_lately(self) -> set[bytes]:
        """The commands that updates delivered lately (or being written again) finished: a bus that still has one
        in the inflight list lost that update, which is written again (``_replay_after``)."""
        return {entry.finished_command for entry in itertools.chain(self._replayable, self._urgent)
                if entry.finished_command is not None}

    def put_removal(self, finished_command: bytes) -> None:
        """Take a command off the inflight list without telling the controller anything."""
        self._add(_Entry(None, finished_command))

    async def delivered(self, entry: _Entry | None = None) -> None:
        """Wait until ``entry`` (as ``put`` returned it) is on the bus, or, with none, every envelope put so far."""
        waiting = [entry] if entry is not None else [*self._urgent, *self._bulk]
        while not all(item.done for item in waiting):
            await self._delivered.wait()

    def _add(self, entry: _Entry) -> _Entry:
        if len(self._urgent) + len(self._bulk) >= MAX_WAITING:
            self._drop_oldest()
        (self._bulk if entry.bulk else self._urgent).append(entry)
        self._wakeup.set()
        return entry

    def _drop_oldest(self) -> None:
        """Make room: drop the oldest envelope that is not being sent, a bulk one if there is any."""
        for lane in (self._bulk, self._urgent):
            entry = next((entry for entry in lane if not entry.done and not entry.seq), None)
            if entry is not None:
                break
        else:
            return
        lane.remove(entry)
        entry.done = True
        self._forget(entry)
        self.dropped += 1
        if self.dropped % 10_000 == 1:
            log.error("outbox full while the bus is away: dropped %d envelopes so far", self.dropped)

    async def run(self) -> None:
        refused = Backoff(first=0.5, cap=30)
        while True:
            try:
                connection = await self.bus.connection()  # the one this turn uses: checked, then written to
                async with self.lock:
                    if self._check_delivered or self._checked_on != self.bus.generation:
                        await self.check_delivered(connection)
                    batch = self._sending or self._next_batch()
                    if batch:
                        await self._write(connection, batch)
                if not batch:
                    await self._wait_for_work()
                    continue
                refused.reset()
            except ConnectionLost as exc:
                log.warning("outbox write interrupted: %s", exc)
                self._check_delivered = True
                await self.bus.connection()
            except ReplyError as exc:
                self.bus.refused(exc, "our outbox write")
                await trio.sleep(refused.next())

    def _next_batch(self) -> list[_Entry]:
        """The envelopes that may go now: urgent ones first (each after the bulk ones it must follow), then
        bulk ones while the outbox in Redis is short."""
        batch: list[_Entry] = []
        size = 0
        for entry in self._waiting(self._urgent):
            if entry.after > self._bulk_written:  # a later update of the same job waits as long: bulk goes in order
                continue
            if len(batch) >= WRITE_BATCH or (batch and size > WRITE_BATCH_BYTES):
                return batch
            batch.append(entry)
            size += entry.size
        room = BULK_BACKLOG - self._backlog - len(batch)
        for entry in itertools.islice(self._waiting(self._bulk), max(room, 0)):
            if len(batch) >= WRITE_BATCH or (batch and size > WRITE_BATCH_BYTES):
                break
            batch.append(entry)
            size += entry.size
        return batch

    @staticmethod
    def _waiting(lane: collections.deque[_Entry]) -> Iterator[_Entry]:
        return (entry for entry in lane if not entry.done)

    async def _wait_for_work(self) -> None:
        """Until something may be written: a new envelope, or (bulk envelopes waiting for the outbox in Redis
        to drain) a look at its length that finds it shorter."""
        if any(True for _ in self._waiting(self._bulk)) and self._backlog >= BULK_BACKLOG:
            with trio.move_on_after(BACKLOG_POLL):
                await self._wakeup.wait()
            self._backlog = await self.bus.execute("LLEN", self.keys.outbox)
        else:
            await self._wakeup.wait()
        self._wakeup = trio.Event()

    async def _write(self, connection: Connection, batch: list[_Entry]) -> None:
        self._sending = batch
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
        wait = self.bus.address.wait
        replies = await connection.pipeline([*commands, wait] if wait else commands, raise_errors=False)
        if wait:
            self.bus.confirmed(replies.pop(), "an outbox write")
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply
        self._delivered_seq = batch[-1].seq
        if envelopes:
            self._backlog = replies[-1][-2]  # what RPUSH answered: the outbox's length
        self._finish(batch)

    async def check_delivered(self, connection: Connection) -> None:
        """On a new connection (``lock`` held): whether the transaction in flight arrived, per ``outseq``;
        whether the bus lost writes of ours (``outseq`` gone, or behind what it had confirmed)."""
        generation = self.bus.generation
        seq = await connection.execute("GET", self.keys.outbox_seq)
        delivered = int(seq or 0)
        if delivered < self._delivered_seq:  # the bus had confirmed writes of ours that it no longer has
            self.data_losses += 1
            for entry in self._sending:  # it is gone too: send it again, after what comes first
                entry.seq = 0
            self._sending = []
            if seq is not None:  # some writes lost (a failover); with all data gone, no job they update is open
                self._replay_after(delivered)
            self.on_data_lost(seq is None)
        if self._sending and self._sending[-1].seq <= delivered:
            self._finish(self._sending)
        self._delivered_seq = delivered
        self._last_seq = max(self._last_seq, delivered)
        self._check_delivered = False
        self._checked_on = generation

    def _replay_after(self, delivered: int) -> None:
        """Put the delivered urgent envelopes the bus lost (numbered past ``delivered``) ahead of the others."""
        lost = [entry for entry in self._replayable if entry.seq > delivered]
        self._replayable.clear()
        for entry in reversed(lost):
            self._urgent.appendleft(_Entry(entry.envelope, entry.finished_command, job=entry.job, replay=True))
        if lost:
            log.warning("the bus lost %d updates of ours that it had confirmed: writing them again", len(lost))

    def _finish(self, batch: list[_Entry]) -> None:
        """``batch`` is on the bus."""
        self._sending = []
        for entry in batch:
            if not entry.done:
                entry.done = True
                self._forget(entry)
                if not entry.bulk and entry.envelope is not None:
                    self._replayable.append(entry)
        for lane in (self._urgent, self._bulk):
            while lane and lane[0].done:
                lane.popleft()
        self._delivered.set()
        self._delivered = trio.Event()

    def _forget(self, entry: _Entry) -> None:
        """``entry`` left us (delivered or dropped)."""
        if entry.bulk:
            self._bulk_bytes -= entry.size
            self._bulk_written = max(self._bulk_written, entry.number)
            for job in entry.jobs:
                if self._newest_bulk_of.get(job) == entry.number:
                    del self._newest_bulk_of[job]
        if entry.finished_command is not None and not entry.replay:
            self.on_delivered(entry.finished_command)
