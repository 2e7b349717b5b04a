"""A bus for unit tests of single modules: fakeredis behind what the daemons' code calls.

The daemons are trio programs and talk to Redis through ``acbus`` (``Bus``, ``Connection``): ``execute(*args)``,
``pipeline(commands, raise_errors=...)``, ``connection()``, ``generation``, ``refused(exc, what)``. fakeredis's
async client is asyncio's, so ``FakeBus`` wraps its *synchronous* client and answers as ``acbus`` does: raw
replies (bytes, ints, lists; no redis-py response callbacks), error replies as ``acbus.connection.ReplyError``
(raised, or in place with ``raise_errors=False``), a ``MULTI`` ... ``EXEC`` sent as part of a pipeline.

It can lose its connection on demand (``lose_connection_on``): a matching pipeline raises ``ConnectionLost``
after or before Redis applied it, and the bus is connected again at once (``generation`` + 1). ``lose_data``
is Redis restarted empty. Use one per test: each has a server of its own.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import fakeredis
import redis
import trio

from acbus.address import BusAddress
from acbus.connection import ConnectionLost, ReplyError

Commands = Sequence[Sequence[Any]]


def transaction(commands: Commands) -> bool:
    """Matches a pipeline that is one ``MULTI`` ... ``EXEC`` transaction (an outbox write)."""
    return bool(commands) and str(commands[0][0]).upper() == "MULTI"


def _as_acbus(reply: Any) -> Any:
    """A reply as ``acbus`` gives it: error replies (also inside an ``EXEC`` reply) as ``ReplyError``."""
    if isinstance(reply, redis.ResponseError):
        return ReplyError(str(reply))
    if isinstance(reply, list):
        return [_as_acbus(item) for item in reply]
    return reply


@dataclass
class _Fault:
    matches: Callable[[Commands], bool]
    applied: bool
    then: Callable[[], Any] | None


class FakeConnection:
    """One connection of a ``FakeBus`` (``acbus.connection.Connection``'s ``execute`` and ``pipeline``)."""

    def __init__(self, bus: "FakeBus") -> None:
        self.bus = bus
        self.is_open = True

    async def execute(self, *args: Any) -> Any:
        return (await self.pipeline([args]))[0]

    async def pipeline(self, commands: Commands, *, raise_errors: bool = True) -> list[Any]:
        await trio.lowlevel.checkpoint()  # a round trip: other tasks run meanwhile
        if not self.is_open:
            raise ConnectionLost("this connection broke before")
        if not commands:
            return []
        self.bus.sent.append([tuple(command) for command in commands])
        fault = self.bus._take_fault(commands)
        if fault is not None and not fault.applied:
            self.bus._lose(fault, "before Redis applied it")
        pipe = self.bus.redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies = [_as_acbus(reply) for reply in pipe.execute(raise_on_error=False)]
        if fault is not None:
            self.bus._lose(fault, "after Redis applied it: the reply is lost")
        if raise_errors:
            for reply in replies:
                if isinstance(reply, ReplyError):
                    raise reply
        return replies


class FakeBus:
    """``acbus.link.Bus`` over a fakeredis server of its own; ``redis`` is a synchronous client of it, for the
    test to set up and read what is in Redis (raw replies: no response callbacks)."""

    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.redis = fakeredis.FakeRedis(server=self.server, protocol=2)
        self.redis.response_callbacks.clear()  # replies as Redis sends them, as acbus gives them
        self.address = BusAddress()
        self.generation = 1
        self.sent: list[list[tuple[Any, ...]]] = []  # every pipeline sent, in order
        self.refusals: list[tuple[str, str]] = []
        self.connections_lost = 0
        self._connection = FakeConnection(self)
        self._faults: list[_Fault] = []

    async def connection(self) -> FakeConnection:
        await trio.lowlevel.checkpoint()
        return self._connection

    async def execute(self, *args: Any) -> Any:
        return await (await self.connection()).execute(*args)

    async def pipeline(self, commands: Commands, *, raise_errors: bool = True) -> list[Any]:
        return await (await self.connection()).pipeline(commands, raise_errors=raise_errors)

    def refused(self, error: ReplyError, what: str) -> None:
        self.refusals.append((str(error), what))

    # -- trouble on demand ---------------------------------------------------------------------

    def lose_connection_on(self, matches: Callable[[Commands], bool], *, applied: bool,
                           then: Callable[[], Any] | None = None) -> None:
        """The next pipeline that ``matches`` raises ``ConnectionLost``, after Redis applied it (``applied``:
        only its reply is lost) or before; ``then`` runs at that moment (say, Redis losing its data too)."""
        self._faults.append(_Fault(matches, applied, then))

    @property
    def faults_pending(self) -> int:
        return len(self._faults)

    def reconnect(self) -> None:
        """The connection breaks and a new one is made at once (``generation`` + 1)."""
        self._connection.is_open = False
        self._connection = FakeConnection(self)
        self.generation += 1

    def lose_data(self) -> None:
        """Redis restarted without persistence: every key gone, and a new connection."""
        self.redis.flushall()
        self.reconnect()

    def _take_fault(self, commands: Commands) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(commands):
                self._faults.remove(fault)
                return fault
        return None

    def _lose(self, fault: _Fault, when: str) -> None:
        self.connections_lost += 1
        if fault.then is not None:
            fault.then()
        self.reconnect()
        raise ConnectionLost(f"connection lost (on demand) {when}")
