"""One end of a tunnel connection: bytes between a socket and two Redis lists.

What the socket sends is pushed, in chunks, onto the ``outbox`` list; what
arrives on the ``inbox`` list is written to the socket. A controller moves
chunks from one end's ``outbox`` to the other end's ``inbox`` (or, when the
controller itself is the gateway, it runs a pipe straight on the agent's
lists). An empty chunk is the half-close: the sender shut down writing.

Backpressure: a list holds at most ``WINDOW`` chunks before its writer
waits, so a slow reader stops its peer's socket reads instead of filling
Redis. The reader takes a whole window at once. Every push and every pop
rings a bell (a pub/sub message, the ``pushed`` and ``popped`` commands
given by the owner) that may unblock the other side; bells can be lost
while a subscriber reconnects, so each wait also looks again after
``RECHECK`` seconds.

The agent and the controller both run pipes, hence this module here.
"""

import contextlib
import socket
import struct
from collections.abc import Sequence
from typing import Any

import trio

from acbus.connection import ConnectionLost, ReplyError
from acbus.link import Bus
from protocol.tunnels import CHUNK_BYTES, CONNECT_TIMEOUT, FIN, KEY_TTL_MS, WINDOW

#: Seconds a waiting half of a pipe sleeps before it looks again without a bell.
RECHECK = 2.0


class PipeBroken(Exception):
    """The connection cannot go on; the message says why."""


class Bell:
    """Something may have changed: a counter, so a ring between a look and a wait is not lost."""

    __slots__ = ("_event", "rung")

    def __init__(self) -> None:
        self.rung = 0
        self._event = trio.Event()

    def ring(self) -> None:
        self.rung += 1
        self._event.set()
        self._event = trio.Event()

    async def wait(self, seen: int, timeout: float = RECHECK) -> None:
        """Until rung after ``seen``, or ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            while self.rung == seen:
                await self._event.wait()


async def dial(host: str, port: int) -> trio.SocketStream:
    """Connect to ``host:port`` for a gateway; ``PipeBroken`` says why it could not."""
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            return await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise PipeBroken(f"cannot connect to {host}:{port}: no answer within {CONNECT_TIMEOUT:g} s") from None
    except OSError as exc:
        raise PipeBroken(f"cannot connect to {host}:{port}: {_os_reason(exc)}") from None


def _os_reason(exc: OSError) -> str:
    """trio tries every address of a host and reports "all attempts failed", the errors as its cause."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        return "; ".join(sorted({_os_reason(leaf) for leaf in cause.exceptions if isinstance(leaf, OSError)}))
    return exc.strerror or str(exc)


class Pipe:
    """Moves one tunnel connection's bytes between a socket and its two lists on the bus, both ways."""

    def __init__(self, bus: Bus, sock: trio.SocketStream, inbox: str, outbox: str, *,
                 pushed: Sequence[Any], popped: Sequence[Any]) -> None:
        self.bus = bus
        self.sock = sock
        self.inbox = inbox
        self.outbox = outbox
        self.pushed = tuple(pushed)
        self.popped = tuple(popped)
        self.sent_fin = False  # our FIN is pushed (or being pushed)
        self.arrived = False  # chunks came from the peer: a controller relays the connection
        self._data = Bell()
        self._room = Bell()
        self._relay_gone = ""

    def data_arrived(self) -> None:
        self._data.ring()

    def room_made(self) -> None:
        self._room.ring()

    def relay_gone(self, reason: str) -> None:
        """Nothing more will arrive: finish with what the inbox holds if it ends with the peer's FIN,
        else break with ``reason``. (Only once our own FIN is pushed can the stream still end well.)"""
        self._relay_gone = reason
        self._data.ring()

    async def run(self) -> None:
        """Carry bytes both ways until both directions are shut down, then close the socket.

        Raises ``PipeBroken`` when the connection breaks; the socket is then
        reset, so the program at its other end does not take a cut stream for
        a complete one. Cancelled, it resets the socket too.
        """
        finished = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._upload)
                nursery.start_soon(self._download, nursery)
            finished = True
        except BaseExceptionGroup as group:
            broken, rest = group.split((PipeBroken, *_BREAKS))
            if rest is not None or broken is None:
                raise
            first = _first(broken)
            raise (first if isinstance(first, PipeBroken) else PipeBroken(_why(first))) from None
        finally:
            await self._close(reset=not finished)

    async def _upload(self) -> None:
        while True:
            chunk = await self.sock.receive_some(CHUNK_BYTES)
            self.sent_fin = chunk == FIN
            seen = self._room.rung
            length, _, _ = await self.bus.pipeline([("RPUSH", self.outbox, chunk),
                                                    ("PEXPIRE", self.outbox, KEY_TTL_MS), self.pushed])
            if chunk == FIN:
                return
            while length >= WINDOW:
                await self._room.wait(seen)
                seen = self._room.rung
                length = await self.bus.execute("LLEN", self.outbox)

    async def _download(self, nursery: trio.Nursery) -> None:
        while True:
            seen = self._data.rung
            chunks = await self.bus.execute("LPOP", self.inbox, WINDOW) or []
            if chunks:  # ring without waiting for the answer: the chunks go out meanwhile
                self.arrived = True
                nursery.start_soon(self.bus.execute, *self.popped)
            for chunk in chunks:
                if chunk == FIN:
                    await self._send_eof()
                    return
                await self.sock.send_all(chunk)
            if not chunks:
                if self._relay_gone:
                    raise PipeBroken(self._relay_gone)
                await self._data.wait(seen)

    async def _send_eof(self) -> None:
        # The program may have closed its socket already: then there is nothing left to tell it.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.sock.send_eof()

    async def _close(self, reset: bool) -> None:
        if reset:
            with contextlib.suppress(OSError):  # linger 0: close with a reset
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await trio.aclose_forcefully(self.sock)


_BREAKS = (ConnectionLost, ReplyError, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def _first(group: BaseExceptionGroup) -> BaseException:
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionLost):
        return f"lost the bus: {exc}"
    if isinstance(exc, ReplyError):
        return f"the bus refused: {exc}"
    cause = exc.__cause__ or exc.__context__ or exc
    return f"the connection broke: {cause}" if str(cause) else f"the connection broke: {type(cause).__name__}"
