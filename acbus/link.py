"""A daemon's lasting link to the bus: reconnects with capped, jittered backoff.

Two kinds of trouble are weather, to be waited out, never a reason for a
daemon to stop: a lost connection (the bus went away) and a *refusal*, an
error reply that says the bus cannot take the command now (out of memory,
still loading its data, a read-only replica, a failed save, an ACL that does
not allow it yet). ``Bus.keep_trying`` waits out both; ``Bus.refused``
counts and logs a refusal met elsewhere.

A bus watched by Sentinel is followed through a failover: every connection
is made to the master the sentinels name (``acbus.connection``), a task
listens to the sentinels' ``+switch-master`` and breaks the connections to
the old master at once (cutting short any wait before connecting again),
and ``Bus.on_switch`` runs on the first connection to a new master before
anything else is sent there.
"""

import collections
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import trio

from acbus.address import BusAddress
from acbus.connection import Connection, ConnectionLost, ReplyError, connect, connect_sentinel

log = logging.getLogger(__name__)


#: The longest a daemon waits between two attempts to reach the bus.
RECONNECT_CAP = 5.0
#: The longest a daemon waits before trying again a command the bus refused.
REFUSAL_CAP = 30.0
#: Seconds between two log lines about refusals of one kind.
REFUSAL_LOG_INTERVAL = 10.0
#: The sentinels' pub/sub channel that says a service has a new master: "<service> <old ip> <old port> <new ip>
#: <new port>".
SWITCH_MASTER = "+switch-master"

#: First words of the error replies that mean "not now": the bus is out of memory, loading, a replica,
#: failing to save, or its ACL does not allow this (yet). Anything else is a bug and is raised.
REFUSALS = frozenset({"OOM", "LOADING", "READONLY", "MISCONF", "NOPERM", "BUSY", "MASTERDOWN", "NOREPLICAS",
                      "TRYAGAIN", "NOAUTH", "WRONGPASS"})

T = TypeVar("T")


def refusal_kind(error: BaseException) -> str | None:
    """``"OOM"`` for ``OOM command not allowed ...``; ``None`` for an error that is no refusal."""
    if not isinstance(error, ReplyError):
        return None
    kind = str(error).split(" ", 1)[0]
    return kind if kind in REFUSALS else None


def is_wrong_type(reply: object) -> bool:
    """Whether a reply says the key holds another type than the command works on (``WRONGTYPE``): a key some
    client or agent may write, made so by it."""
    return isinstance(reply, ReplyError) and str(reply).startswith("WRONGTYPE")


def raise_refusal(replies: Sequence[object]) -> None:
    """Raise the first refusal among a pipeline's replies (error replies in place), once the others are
    handled: under ``Pending.serve`` the whole batch is then handled again after a growing delay, which is
    harmless for work that finds nothing left to do the second time (a drain, a relay)."""
    for reply in replies:
        if isinstance(reply, ReplyError) and refusal_kind(reply) is not None:
            raise reply


class Backoff:
    """Delays that double up to ``cap``, each drawn at random from its upper half.

    The randomness keeps a fleet of daemons from reconnecting in lockstep
    when the bus comes back.
    """

    def __init__(self, first: float = 0.05, cap: float = RECONNECT_CAP) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.first * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Bus:
    """One shared, pipelined connection that is always being kept up.

    ``execute``/``pipeline`` wait while the bus is away and raise
    ``ConnectionLost`` only for a command that was in flight when the
    connection broke: whether it ran is unknown, so retrying is the caller's
    decision. ``generation`` counts connections, so a task can tell that it
    must re-subscribe or re-register. With Sentinel, ``master`` is where the
    shared connection is, ``switches`` counts the times it moved to another
    master, and ``on_switch`` (if set) runs on the first connection to a new
    master before the bus is used there.
    """

    def __init__(self, address: BusAddress, name: str) -> None:
        self.address = address
        self.name = name
        self.generation = 0
        self.reconnects = 0
        self.master: tuple[str, int] | None = None
        self.switches = 0
        self.on_switch: Callable[[Connection], Awaitable[None]] | None = None
        self.unconfirmed = 0  # writes that fewer replicas than ``wait_replicas`` confirmed in time
        self._open: set[Connection] = set()  # every connection of ours, for a switch to break them
        self._switched = trio.Event()  # set (and replaced) when the sentinels announce a new master
        # By kind (the first word of the reply), every kind counted from 0 so that metrics show them all.
        self.refusals: collections.Counter[str] = collections.Counter(dict.fromkeys(sorted(REFUSALS), 0))
        self._refusal_logged: dict[str, float] = {}
        self._connection: Connection | None = None
        self._connected = trio.Event()
        self._changed = trio.Event()

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and self._connection.is_open

    async def connection(self) -> Connection:
        while not self.is_connected:
            await self._connected.wait()
        assert self._connection is not None  # is_connected says so
        return self._connection

    async def execute(self, *args: Any) -> Any:
        return await (await self.connection()).execute(*args)

    async def pipeline(self, commands: Sequence[Sequence[Any]], *, raise_errors: bool = True) -> list[Any]:
        return await (await self.connection()).pipeline(commands, raise_errors=raise_errors)

    async def scan(self, pattern: str) -> list[str]:
        """Every key matching ``pattern``, found with ``SCAN`` so Redis is never blocked."""
        found: list[str] = []
        cursor: bytes | int = 0
        while True:
            cursor, batch = await self.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            found += (key.decode() for key in batch)
            if int(cursor) == 0:
                return found

    def refused(self, error: ReplyError, what: str) -> None:
        """Count a refusal of the bus (``refusal_kind``) and say so in the log, once in a while per kind."""
        kind = refusal_kind(error) or "ERR"
        self.refusals[kind] += 1
        now = trio.current_time()
        if now - self._refusal_logged.get(kind, -REFUSAL_LOG_INTERVAL) >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged[kind] = now
            log.warning("%s: the bus at %s refuses %s (%s); backing off and trying again (%d %s refusals so far)",
                        self.name, self.address.url, what, error, self.refusals[kind], kind)

    async def keep_trying(self, operation: Callable[[], Awaitable[T]], what: str, cap: float = REFUSAL_CAP) -> T:
        """``await operation()`` until it succeeds: after a lost connection as soon as the next one is up,
        after a refusal with a growing, jittered delay of at most ``cap`` seconds. Other errors are raised."""
        refused = Backoff(first=min(0.2, cap), cap=cap)
        while True:
            try:
                return await operation()
            except ConnectionLost:
                await self.connection()
            except ReplyError as exc:
                if refusal_kind(exc) is None:
                    raise
                self.refused(exc, what)
                await trio.sleep(refused.next())

    async def set_alive(self, entries: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        """Write heartbeat keys (key, value) that live ``ttl_ms``; return, for each, whether it was still there
        (gone: it expired, so whoever watches it may have judged us dead). A Redis out of memory refuses new
        data but still renews expiries: then their expiry is renewed instead, so a full bus does not make us
        look dead."""
        replies = await self.pipeline([("SET", key, value, "PX", ttl_ms, "GET") for key, value in entries],
                                      raise_errors=False)
        wrong = [index for index, reply in enumerate(replies) if is_wrong_type(reply)]
        if wrong:  # (``GET`` cannot read it) someone who may push to the key made it a list: it was not ours
            await self.pipeline([("SET", *entries[index], "PX", ttl_ms) for index in wrong])  # (of any type)
            log.warning("%s: replaced %s: it held another type than a heartbeat (made so by a client or an agent "
                        "that may push to it)", self.name, ", ".join(entries[index][0] for index in wrong))
            for index in wrong:
                replies[index] = None
        full = [index for index, reply in enumerate(replies) if refusal_kind(reply) == "OOM"]
        if full:
            renewed = await self.pipeline([("PEXPIRE", entries[index][0], ttl_ms) for index in full])
            self.refused(replies[full[0]], "a heartbeat")
            for index, existed in zip(full, renewed, strict=True):
                replies[index] = b"" if existed else None
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply
        return [reply is not None for reply in replies]

    def confirmed(self, acknowledged: int | ReplyError, what: str) -> None:
        """Note how many replicas confirmed a write (the reply of ``address.wait``, which may be an error: an ACL
        that does not allow ``WAIT``); fewer than asked for means the write may be lost in a failover: counted
        and logged, once in a while."""
        if isinstance(acknowledged, int) and acknowledged >= self.address.wait_replicas:
            return
        self.unconfirmed += 1
        now = trio.current_time()
        if now - self._refusal_logged.get("WAIT", -REFUSAL_LOG_INTERVAL) >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged["WAIT"] = now
            log.warning("%s: %s of the %d replicas asked for confirmed %s within %g s: a failover now could lose "
                        "it (%d such writes so far)", self.name, acknowledged, self.address.wait_replicas, what,
                        self.address.wait_timeout, self.unconfirmed)

    async def wait_generation(self, seen: int) -> int:
        """Wait for a connection newer than generation ``seen``; return its generation."""
        while self.generation <= seen or not self.is_connected:
            await self._changed.wait()
        return self.generation

    async def serve_dedicated(self, handler: Callable[[Connection], Awaitable[None]]) -> None:
        """Run ``handler`` on a connection of its own (for blocking commands and
        subscriptions), starting it again on a new connection whenever it breaks."""
        retry = _Retry(self)
        while True:
            try:
                async with self._connect() as connection:
                    retry.connected()
                    await handler(connection)
                    return
            except (ConnectionLost, ReplyError) as exc:
                delay = retry.failed(exc)
            await self._pause(delay)

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[Connection]:
        """A connection of ours (to the master the sentinels name, with Sentinel), known while it lives."""
        async with connect(self.address, self.name) as connection:
            self._open.add(connection)
            try:
                yield connection
            finally:
                self._open.discard(connection)

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds before connecting again, or less: until the sentinels announce a new master."""
        with trio.move_on_after(delay):
            await self._switched.wait()

    async def _keep_connected(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        retry = _Retry(self)
        task_status.started()
        while True:
            try:
                async with self._connect() as connection:
                    await self._moved(connection)
                    retry.connected()
                    self._connection = connection
                    self.generation += 1
                    if self.generation > 1:
                        self.reconnects += 1
                        log.info("%s: reconnected to the bus at %s", self.name, self.address.url)
                    self._announce()
                    delay = retry.failed(await connection.wait_closed())
            except (ConnectionLost, ReplyError) as exc:
                delay = retry.failed(exc)
            self._connection = None
            await self._pause(delay)

    async def _moved(self, connection: Connection) -> None:
        """Follow the master: on the first connection to a new one, say so and run ``on_switch`` there."""
        if connection.master is None or connection.master == self.master:
            return
        if self.master is not None:
            log.warning("%s: the master of %r moved from %s:%d to %s:%d (a Sentinel failover)", self.name,
                        self.address.service, *self.master, *connection.master)
            if self.on_switch is not None:
                await self.on_switch(connection)
            self.switches += 1
        self.master = connection.master

    async def watch_sentinels(self) -> None:
        """Listen to the sentinels' ``+switch-master`` (one sentinel at a time, the next when it fails): when
        our service moves, break every connection to another master and connect again at once."""
        retry = _Retry(self)
        for host, port in itertools.cycle(self.address.sentinels):
            try:
                async with connect_sentinel(self.address, host, port) as sentinel:
                    await sentinel.subscribe(SWITCH_MASTER)
                    retry.connected()
                    while True:
                        _, data = await sentinel.next_message()
                        self._switch_announced(data)
            except (ConnectionLost, ReplyError) as exc:
                delay = retry.failed(exc, f"the sentinel at {host}:{port}")
            await trio.sleep(delay)

    def _switch_announced(self, data: bytes) -> None:
        words = data.decode("utf-8", "replace").split()
        if len(words) != 5 or words[0] != self.address.service or not words[4].isdigit():
            return
        master = (words[3], int(words[4]))
        for connection in list(self._open):
            if connection.master != master:
                connection.abort(f"the sentinels moved the master of {words[0]!r} to {master[0]}:{master[1]}")
        self._switched.set()
        self._switched = trio.Event()

    def _announce(self) -> None:
        self._connected.set()
        self._connected = trio.Event()
        self._changed.set()
        self._changed = trio.Event()


#: An item handled twice running with nothing to do (less than ``IDLE_STREAK_GAP`` apart) rests this long:
#: marks meanwhile are held, and handled once when it ends. Each further such handling doubles the rest, up to
#: ``IDLE_REST_CAP``; handling that finds work ends the streak. So a flood of marks (an agent ringing its bell
#: in a loop, its outbox empty) costs one handling every ``IDLE_REST_CAP`` seconds instead of one per pass of
#: the scheduler, and an honest item, which finds work almost every time, never rests.
IDLE_REST_FIRST = 0.001
IDLE_REST_CAP = 0.1
IDLE_STREAK_GAP = 1.0

#: What handles a batch of ``Pending`` items: it returns those it found nothing to do for (``None``: none).
BatchHandler = Callable[[list[T]], Awaitable[Collection[T] | None]]


class Pending(Generic[T]):
    """Things waiting to be handled in batches by one task (outboxes to drain, streams to relay): ``mark`` adds
    one and wakes the task (``serve``), which takes every marked thing at once. A batch the bus could not take
    is marked again and handled again: once the bus is back after a lost connection, after a growing delay
    after a refusal. ``on_flood`` is told of an item the first time its rest reaches ``IDLE_REST_CAP``."""

    def __init__(self, on_flood: Callable[[T], None] = lambda item: None) -> None:
        self.on_flood = on_flood
        self._marked: set[T] = set()
        self._wakeup = trio.Event()
        self._idle: dict[T, tuple[float, float]] = {}  # item found idle lately -> its last rest (0: none), when
        self._resting: dict[T, float] = {}  # item -> when its rest ends (trio's clock)
        self._held: set[T] = set()  # resting items marked since their rest began

    def mark(self, item: T) -> None:
        if item in self._resting:
            self._held.add(item)
            return
        self._marked.add(item)
        self._wakeup.set()

    async def serve(self, bus: Bus, handle: BatchHandler[T], what: str) -> None:
        """Run ``handle`` on each batch (sorted) as things are marked, until cancelled."""
        refused = Backoff(first=0.2, cap=REFUSAL_CAP)
        while True:
            await self._next_marks()
            if not self._marked:
                continue
            self._wakeup = trio.Event()
            batch, self._marked = sorted(self._marked), set()  # type: ignore[type-var]  # T is orderable
            try:
                idle = await handle(batch)
                refused.reset()
            except (ConnectionLost, ReplyError) as exc:
                for item in batch:
                    self.mark(item)
                if isinstance(exc, ReplyError):
                    bus.refused(exc, what)
                    await trio.sleep(refused.next())
                else:
                    log.warning("%s interrupted (%s); going on once the bus is back", what, exc)
                    await bus.connection()
                continue
            self._note_idle(batch, idle or ())

    def _note_idle(self, batch: list[T], idle: Collection[T]) -> None:
        now = trio.current_time()
        for item in batch:
            if item not in idle:
                self._idle.pop(item, None)
                continue
            streak = self._idle.get(item)
            if streak is None or now - streak[1] >= IDLE_STREAK_GAP:
                self._idle[item] = (0.0, now)  # the first idle handling of a streak: no rest yet
                continue
            last_rest = streak[0]
            rest = min(2 * last_rest, IDLE_REST_CAP) if last_rest else IDLE_REST_FIRST
            self._idle[item] = (rest, now)
            self._resting[item] = now + rest
            if rest == IDLE_REST_CAP > last_rest:
                self.on_flood(item)

    async def _next_marks(self) -> None:
        """Wait until something is marked, or a rest ends (its held marks are then marked)."""
        if not self._resting:
            await self._wakeup.wait()
            return
        with trio.move_on_at(min(self._resting.values())):
            await self._wakeup.wait()
        now = trio.current_time()
        for item in [item for item, until in self._resting.items() if until <= now]:
            del self._resting[item]
            if item in self._held:
                self._held.discard(item)
                self._marked.add(item)


class _Retry:
    """How long to wait before connecting again: a lost connection backs off up to ``RECONNECT_CAP`` (reset by
    each connection made); a refusal (the bus answered, and said no) up to ``REFUSAL_CAP``, reset only once a
    connection has lived that long, and is counted and logged through ``Bus.refused``."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.lost = Backoff()
        self.refused = Backoff(first=0.2, cap=REFUSAL_CAP)
        self._connected_at = -REFUSAL_CAP

    def connected(self) -> None:
        self.lost.reset()
        self._connected_at = trio.current_time()

    def failed(self, error: BaseException, what: str = "") -> float:
        if isinstance(error, ReplyError):
            if trio.current_time() - self._connected_at >= REFUSAL_CAP:
                self.refused.reset()
            if refusal_kind(error) is None:
                log.error("%s: %s refused us: %s", self.bus.name, what or f"the bus at {self.bus.address.url}",
                          error)
            else:
                self.bus.refused(error, "a connection of ours")
            return self.refused.next()
        log.warning("%s: %s%s; connecting again", self.bus.name, f"{what}: " if what else "", error)
        return self.lost.next()


@asynccontextmanager
async def open_bus(address: BusAddress, name: str) -> AsyncIterator[Bus]:
    """A ``Bus`` kept connected for as long as the block runs."""
    async with trio.open_nursery() as nursery:
        bus = Bus(address, name)
        if address.sentinels:
            nursery.start_soon(bus.watch_sentinels)
        await nursery.start(bus._keep_connected)
        try:
            yield bus
        finally:
            nursery.cancel_scope.cancel()
