"""A daemon's lasting link to the bus: reconnects with capped, jittered backoff."""

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from bus.address import BusAddress
from bus.connection import Connection, ConnectionLost, ReplyError, connect

log = logging.getLogger(__name__)


#: The longest a daemon waits between two attempts to reach the bus.
RECONNECT_CAP = 5.0


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
    must re-subscribe or re-register.
    """

    def __init__(self, address: BusAddress, name: str) -> None:
        self.address = address
        self.name = name
        self.generation = 0
        self.reconnects = 0
        self._connection: Connection | None = None
        self._connected = trio.Event()
        self._changed = trio.Event()

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and self._connection.is_open

    async def connection(self) -> Connection:
        while not self.is_connected:
            await self._connected.wait()
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

    async def wait_generation(self, seen: int) -> int:
        """Wait for a connection newer than generation ``seen``; return its generation."""
        while self.generation <= seen or not self.is_connected:
            await self._changed.wait()
        return self.generation

    async def serve_dedicated(self, handler: Callable[[Connection], Awaitable[None]]) -> None:
        """Run ``handler`` on a connection of its own (for blocking commands and
        subscriptions), starting it again on a new connection whenever it breaks."""
        backoff = Backoff()
        while True:
            try:
                async with connect(self.address, self.name) as connection:
                    backoff.reset()
                    await handler(connection)
                    return
            except ConnectionLost as exc:
                log.warning("%s: %s; retrying", self.name, exc)
            except ReplyError as exc:
                log.error("%s: the bus at %s refused us: %s", self.name, self.address.url, exc)
            await trio.sleep(backoff.next())

    async def _keep_connected(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        backoff = Backoff()
        task_status.started()
        while True:
            try:
                async with connect(self.address, self.name) as connection:
                    backoff.reset()
                    self._connection = connection
                    self.generation += 1
                    if self.generation > 1:
                        self.reconnects += 1
                        log.info("%s: reconnected to the bus at %s", self.name, self.address.url)
                    self._announce()
                    reason = await connection.wait_closed()
                    log.warning("%s: %s", self.name, reason)
            except ConnectionLost as exc:
                log.warning("%s: %s", self.name, exc)
            except ReplyError as exc:
                log.error("%s: the bus at %s refused us: %s", self.name, self.address.url, exc)
            self._connection = None
            await trio.sleep(backoff.next())

    def _announce(self) -> None:
        self._connected.set()
        self._connected = trio.Event()
        self._changed.set()
        self._changed = trio.Event()


@asynccontextmanager
async def open_bus(address: BusAddress, name: str) -> AsyncIterator[Bus]:
    """A ``Bus`` kept connected for as long as the block runs."""
    async with trio.open_nursery() as nursery:
        bus = Bus(address, name)
        await nursery.start(bus._keep_connected)
        try:
            yield bus
        finally:
            nursery.cancel_scope.cancel()
