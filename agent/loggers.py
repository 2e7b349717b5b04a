"""Where job messages go: the ``[logging.*]`` loggers.

* ``DB``: the local message DB (``agent/messagedb.py``), written in batches
  by a worker thread. When writes fall behind, ``room()`` makes the job's
  readers wait, so a flooding process is slowed down instead of filling the
  agent's memory.
* ``AC``: batched to the controllers (``log`` envelopes, every ``flush_int``
  seconds or ``batch_size`` messages). It never slows a job down: when an
  outbox is full (the bus is away for long), batches are dropped and counted.
* ``console``: the agent's own log.

Each job gets a ``JobLog``: the loggers with its own level filters applied
(``loglevels`` for all of them, ``loglevels_db`` and ``loglevels_ac``
overriding the DB and AC loggers' own levels). Every message it emits gets
the next id of the agent's message counter.
"""

import logging
import time
from collections.abc import Sequence
from typing import Any

import trio

from agent.config import AgentConfig, Logger
from agent.message_ids import MessageIds
from agent.messagedb import MAX_STORED_CHARS, JobRef, MessageDB, MessageQuery, encode_rows, join_encoded
from agent.outbox import Outbox
from protocol import envelope
from protocol.command import Command
from protocol.levels import ALL_LEVELS, CRITICAL, OPS_ERROR, WARNING
from protocol.parser import Message

log = logging.getLogger(__name__)
job_log = logging.getLogger("agent.jobs")

#: A message on its way to the loggers: ``(id, level, data)``.
Record = tuple[int, int, str]

#: An AC logger's envelope stops growing after the message that brings it to this many bytes (a drain
#: call of the controller takes in about that much: a few milliseconds of stamping).
LOG_ENVELOPE_BYTES = 16 * 1024
#: Messages (and characters) waiting for the DB before jobs are made to wait.
MAX_PENDING_ROWS = 50_000
MAX_PENDING_CHARS = 16 * 1024 * 1024


class DBLogger:
    """Messages into the local message DB, written in batches by a worker thread; it slows a flood down."""

    def __init__(self, config: Logger) -> None:
        self.name = config.name
        self.levels = config.levels
        self.db = MessageDB(config.log_dir, config.max_bytes, config.max_age)
        self._batches: list[str] = []  # pending messages, JSON-encoded a chunk at a time
        self._pending = 0
        self._chars = 0
        self._job_keys: dict[JobRef, int] = {}
        self._jobs: dict[int, JobRef] = {}  # the jobs of the pending rows
        self._next_key = 1
        self._added = 0  # rows ever added
        self._stored = 0  # rows ever written (or given up on)
        self._wakeup = trio.Event()
        self._written = trio.Event()

    def open(self) -> int:
        """Open the DB; return the highest message id in it."""
        self.db.open()
        self._next_key = self.db.next_job_key()
        return self.db.max_id()

    def add(self, job: JobRef, epoch: int, records: Sequence[Record]) -> None:
        key = self._job_keys.get(job)
        if key is None:
            key = self._job_keys[job] = self._next_key
            self._next_key += 1
        self._jobs[key] = job
        batch = encode_rows([(id_, key, epoch, level, data) for id_, level, data in records])
        self._batches.append(batch)
        self._pending += len(records)
        self._added += len(records)
        self._chars += len(batch)
        self._wakeup.set()

    def forget_job(self, job: JobRef) -> None:
        """The job is over: its key is no longer needed in memory."""
        self._job_keys.pop(job, None)

    @property
    def congested(self) -> bool:
        return self._pending >= MAX_PENDING_ROWS or self._chars >= MAX_PENDING_CHARS

    async def room(self) -> None:
        while self.congested:
            await self._written.wait()

    async def run(self) -> None:
        try:
            while True:
                if not self._batches:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    continue
                await self._write_pending()
        finally:
            with trio.CancelScope(shield=True):
                await self._write_pending()
                self.db.close()

    async def flush(self) -> None:
        """Wait until every message added so far is written (later ones need not be)."""
        target = self._added
        while self._stored < target:
            await self._written.wait()

    async def query(self, query: MessageQuery) -> list[dict[str, Any]]:
        return await trio.to_thread.run_sync(self.db.query, query)

    async def _write_pending(self) -> None:
        batches, jobs, count = self._batches, self._jobs, self._pending
        self._batches, self._jobs, self._pending, self._chars = [], {}, 0, 0
        if not batches:
            return
        try:
            await trio.to_thread.run_sync(self.db.insert, join_encoded(batches), jobs)
        except Exception as exc:
            log.error("message DB %s: could not store %d messages: %r", self.db.path, count, exc)
        finally:
            self._stored += count
            self._written.set()
            self._written = trio.Event()


class ACLogger:
    """Messages to the controllers, in envelopes of at most ``batch_size`` messages and ``LOG_ENVELOPE_BYTES``.

    Each message is encoded as it arrives and an envelope goes out as soon as it is full, so the work a
    flood costs is spread over the job's output as it is read; ``run`` sends what waits every ``flush_int``.
    """

    def __init__(self, config: Logger, outboxes: Sequence[Outbox]) -> None:
        self.name = config.name
        self.levels = config.levels
        self.flush_interval = config.flush_int
        self.batch_size = config.batch_size
        self.outboxes = tuple(outboxes)
        self._lines: list[str] = []  # encoded messages of the envelope being filled
        self._bytes = 0
        self._jobs: set[str] = set()  # the jobs those messages belong to
        self._encoders: dict[JobRef, envelope.LogLines] = {}
        self._wakeup = trio.Event()
        self.dropped = 0

    def add(self, job: JobRef, epoch: int, records: Sequence[Record]) -> None:
        jobid = job[0]
        encoder = self._encoders.get(job)
        if encoder is None:
            encoder = self._encoders[job] = envelope.LogLines(*job)
        self._jobs.add(jobid)
        for id_, level, data in records:
            line = encoder.line(id_, epoch, level, clip(data))
            self._lines.append(line)
            self._bytes += len(line) + 1
            if len(self._lines) >= self.batch_size or self._bytes >= LOG_ENVELOPE_BYTES:
                self.flush()
                self._jobs.add(jobid)
        self._wakeup.set()

    def forget_job(self, job: JobRef) -> None:
        """The job is over."""
        self._encoders.pop(job, None)

    congested = False

    async def room(self) -> None:
        return

    async def run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                if self._lines:  # else: already sent (a full envelope, or before a job's result)
                    await trio.sleep(self.flush_interval)
                    self.flush()
        finally:
            self.flush()

    def flush(self) -> None:
        """Hand the messages waiting to the outboxes now."""
        if not self._lines:
            return
        lines, jobs = self._lines, self._jobs
        self._lines, self._bytes, self._jobs = [], 0, set()
        body = envelope.log_envelope(lines)
        for outbox in self.outboxes:
            if outbox.has_room(len(body)):
                outbox.put_bulk(body, jobs)
            else:
                self._count_dropped(outbox, len(lines))

    def _count_dropped(self, outbox: Outbox, count: int) -> None:
        if self.dropped == 0 or self.dropped // 10_000 != (self.dropped + count) // 10_000:
            log.warning("AC logger %s: outbox to %s is full, dropping log messages (%d so far)",
                        self.name, outbox.keys.name, self.dropped + count)
        self.dropped += count


class ConsoleLogger:
    """Messages into the agent's own log (warnings and errors at their severity)."""

    def __init__(self, config: Logger) -> None:
        self.name = config.name
        self.levels = config.levels

    congested = False

    async def room(self) -> None:
        return

    def add(self, job: JobRef, epoch: int, records: Sequence[Record]) -> None:
        jobid, domain, name = job
        for _, level, data in records:
            severity = logging.ERROR if level in (OPS_ERROR, CRITICAL) else \
                logging.WARNING if level == WARNING else logging.INFO
            job_log.log(severity, "job %s (%s/%s) level %d: %s", jobid, domain, name, level, clip(data, 2000))


Sink = DBLogger | ACLogger | ConsoleLogger


def clip(data: str, limit: int = MAX_STORED_CHARS) -> str:
    """``data`` cut to ``limit`` characters, saying how much was cut."""
    if len(data) <= limit:
        return data
    return data[:limit] + f"\n[{len(data) - limit} more characters cut]"


class JobLog:
    """One job's view of the loggers: each with the levels that job sends it."""

    __slots__ = ("ids", "job", "routes", "sent", "waits")

    def __init__(self, job: JobRef, routes: list[tuple[Sink, frozenset[int] | None]], ids: MessageIds) -> None:
        self.job = job
        self.routes = routes  # levels None: all of them
        self.ids = ids
        self.waits = tuple(sink for sink, _ in routes if isinstance(sink, DBLogger))
        self.sent: set[Sink] = set()  # sinks that got messages since the last flush

    def close(self) -> None:
        """The job is over."""
        for sink, _ in self.routes:
            if isinstance(sink, DBLogger | ACLogger):
                sink.forget_job(self.job)

    def emit(self, messages: Sequence[Message]) -> None:
        if not self.routes or not messages:
            return
        first = self.ids.take(len(messages))
        epoch = int(time.time())
        records = [(first + index, message.level, message.text) for index, message in enumerate(messages)]
        for sink, levels in self.routes:
            chosen = records if levels is None else [record for record in records if record[1] in levels]
            if chosen:
                sink.add(self.job, epoch, chosen)
                self.sent.add(sink)

    async def room(self) -> None:
        for sink in self.waits:
            if sink.congested:
                await sink.room()

    async def flush(self) -> None:
        """Before a result is reported: the job's messages are in the DB and in the outboxes ahead of it,
        so a client that reads the result and then asks for the messages finds them all."""
        sent, self.sent = self.sent, set()
        for sink in sent:
            if isinstance(sink, ACLogger):
                sink.flush()
        for sink in sent:
            if isinstance(sink, DBLogger):
                await sink.flush()


class Loggers:
    """Every configured logger, and the message id counter they share."""

    def __init__(self, config: AgentConfig, outboxes: dict[str, Outbox]) -> None:
        self.config = config
        self.db = [DBLogger(logger) for logger in config.loggers if logger.type == "DB"]
        self.ac = [ACLogger(logger, _chosen(outboxes, logger.controllers))
                   for logger in config.loggers if logger.type == "AC"]
        self.console = [ConsoleLogger(logger) for logger in config.loggers if logger.type == "console"]
        self.ids: MessageIds | None = None

    @property
    def database(self) -> DBLogger | None:
        """The DB that ``get_msgs`` reads: the first DB logger's."""
        return self.db[0] if self.db else None

    def open(self) -> None:
        """Open the DBs and the id counter (blocking; at start, before anything runs)."""
        highest = max((logger.open() for logger in self.db), default=0)
        self.ids = MessageIds(self.config.message_id_file, at_least=highest + 1)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for logger in self.db:
                nursery.start_soon(logger.run)
            for ac_logger in self.ac:
                nursery.start_soon(ac_logger.run)

    async def flush(self) -> None:
        for ac_logger in self.ac:
            ac_logger.flush()
        for db_logger in self.db:
            await db_logger.flush()

    def for_job(self, command: Command) -> JobLog:
        args = command.args
        keep = args.levels()
        overrides = {"DB": args.levels_db(), "AC": args.levels_ac(), "console": None}
        routes: list[tuple[Sink, frozenset[int] | None]] = []
        for kind, loggers in (("DB", self.db), ("AC", self.ac), ("console", self.console)):
            for logger in loggers:
                override = overrides[kind]
                levels = override if override is not None else logger.levels
                if keep is not None:
                    levels = levels & keep
                if levels:
                    routes.append((logger, None if levels == ALL_LEVELS else levels))
        assert self.ids is not None  # open() runs at start, before any job
        return JobLog((command.id, args.domain or "", args.name or ""), routes, self.ids)


def _chosen(outboxes: dict[str, Outbox], names: Sequence[str]) -> list[Outbox]:
    return [outboxes[name] for name in names] if names else list(outboxes.values())
