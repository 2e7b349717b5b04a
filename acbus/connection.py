"""One socket to Redis, shared by many trio tasks.

Callers send whole pipelines under a lock and queue a ticket; one reader task
feeds the bytes it receives to hiredis and hands each reply to the oldest
ticket. So concurrent callers are pipelined on the wire without waiting for
each other's round trips.

On a plain socket (TCP or unix; TLS goes through ``trio.SSLStream``) the
connection reads and writes the socket's descriptor itself: a pipeline that
fits in the socket's buffer is written at once, without a pass through
trio's scheduler, and the reader waits for data before it reads instead of
trying first. One command at a time, that is two scheduler passes and one
failed ``recv`` fewer per round trip, which is most of what a daemon spends
on a command (see BENCHMARKS.md, "Where the rest goes").

For a bus watched by Sentinel, ``connect`` first asks the sentinels, one
after the other, where the master is (``SENTINEL get-master-addr-by-name``),
then checks that the node it reached says it is the master (``ROLE``): a
failover may be under way. Such a connection breaks itself as soon as the
node answers ``READONLY`` (it was turned into a replica), so that its user
connects again, to the new master.
"""

import collections
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import hiredis
import trio
from redis.connection import Connection as _RedisPyConnection

from acbus.address import BusAddress

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
_RECEIVE_SIZE = 256 * 1024
_PUSH_KINDS = (b"message", b"pmessage")
#: Pub/sub messages held for the subscriber: past this many, the reader reads no more until it takes them.
MESSAGES_HELD = 10_000

#: redis-py's encoder, used only to pack commands (it never connects).
_packer = _RedisPyConnection()


class ReplyError(Exception):
    """Redis answered a command with an error reply."""


class ConnectionLost(ConnectionError):
    """The connection broke. A command that was in flight may or may not have run."""


class _Ticket:
    __slots__ = ("done", "error", "remaining", "replies")

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.replies: list[Any] = []
        self.done = trio.Event()
        self.error: BaseException | None = None


class Connection:
    """A live connection. Use ``connect()`` to get one. ``master``: the ``(host, port)`` of the master the
    sentinels named (``None`` for a plain address)."""

    def __init__(self, stream: trio.abc.Stream, master: tuple[str, int] | None = None) -> None:
        self._stream = stream
        self.master = master
        # The descriptor of a plain socket, read and written directly (None: through the stream, e.g. TLS).
        self._fd: int | None = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        self._more_waiting = False  # the last read filled the buffer: read again before waiting
        self._reader = hiredis.Reader(replyError=ReplyError)
        self._tickets: collections.deque[_Ticket] = collections.deque()
        self._send_lock = trio.Lock()
        self._broken: ConnectionLost | None = None
        self._closed = trio.Event()
        self._messages: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._messages_changed = trio.Event()  # a message came, one was taken, or the connection broke
        self._subscribed = False

    @property
    def is_open(self) -> bool:
        return self._broken is None

    async def execute(self, *args: Any) -> Any:
        """Run one command; an error reply raises ``ReplyError``."""
        return (await self.pipeline([args]))[0]

    async def pipeline(self, commands: Sequence[Sequence[Any]], *, raise_errors: bool = True) -> list[Any]:
        """Run several commands in one round trip; replies in order.

        With ``raise_errors=False`` an error reply is returned in place as a
        ``ReplyError`` instead of raised.
        """
        if not commands:
            return []
        payload = b"".join(_packer.pack_commands(commands))
        ticket = _Ticket(len(commands))
        if self._fd is not None and not self._send_lock.locked():
            await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller sends nothing (no pass otherwise)
            self._raise_if_broken()
            self._tickets.append(ticket)
            sent = self._write_now(payload)
            if sent < len(payload):  # the socket's buffer is full: the rest waits, and so do later senders
                self._send_lock.acquire_nowait()  # free: checked above, and nothing was awaited since
                try:
                    await self._send_rest(memoryview(payload)[sent:])
                finally:
                    self._send_lock.release()
        else:
            async with self._send_lock:
                self._raise_if_broken()
                self._tickets.append(ticket)
                await self._send_rest(memoryview(payload))
        await ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        if raise_errors:
            for reply in ticket.replies:
                if isinstance(reply, ReplyError):
                    raise reply
        return ticket.replies

    def _write_now(self, data: bytes | memoryview) -> int:
        """Write what the socket takes now, without waiting; return how many bytes that was."""
        assert self._fd is not None
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._break(ConnectionLost(f"sending to the bus failed: {exc!r}"))
            assert self._broken is not None  # _break() just set it, if it was not set already
            raise self._broken from exc

    async def _send_rest(self, data: memoryview) -> None:
        """Send ``data`` whole (the send lock held)."""
        try:
            if self._fd is None:
                await self._stream.send_all(data)
                return
            while data:
                await trio.lowlevel.wait_writable(self._fd)
                data = data[self._write_now(data):]
        except BaseException as exc:
            # A send cut short (by an error or a cancellation) leaves half a
            # command on the wire: nothing more can be sent on this socket.
            self._break(ConnectionLost(f"sending to the bus failed: {exc!r}"))
            if isinstance(exc, trio.Cancelled):
                raise
            assert self._broken is not None  # _break() just set it, if it was not set already
            raise self._broken from exc

    async def _receive(self) -> bytes | bytearray:
        """The next bytes from the bus (b"": it closed the connection)."""
        if self._fd is None:
            return await self._stream.receive_some(_RECEIVE_SIZE)
        while True:
            if self._more_waiting:
                await trio.lowlevel.checkpoint()  # a socket that keeps giving must not keep the other tasks waiting
            else:
                await trio.lowlevel.wait_readable(self._fd)
            try:
                data = os.read(self._fd, _RECEIVE_SIZE)
            except BlockingIOError:
                self._more_waiting = False
                continue
            self._more_waiting = len(data) == _RECEIVE_SIZE
            return data

    async def psubscribe(self, *patterns: str) -> None:
        """Enter pub/sub mode; messages then come from ``next_message()``."""
        self._subscribed = True
        await self.pipeline([("PSUBSCRIBE", *patterns)])

    async def subscribe(self, *channels: str) -> None:
        """Enter pub/sub mode on exact channels. (An ACL user limited to channels by pattern may
        ``SUBSCRIBE`` to a matching channel, but ``PSUBSCRIBE`` only to the very pattern it was given.)"""
        self._subscribed = True
        await self.pipeline([("SUBSCRIBE", channel) for channel in channels])

    async def next_message(self) -> tuple[bytes, bytes]:
        """The next pub/sub message as ``(channel, data)``."""
        await self._wait_for_messages()
        message = self._messages.popleft()
        self._note_messages_changed()
        return message

    async def next_messages(self) -> list[tuple[bytes, bytes]]:
        """Every pub/sub message received and not taken yet (at least one), oldest first. A subscriber that
        takes them so wakes once per read from the socket, not once per message: a flood of messages (an
        agent ringing its bell in a loop) costs it little more than hiredis takes to parse them."""
        await self._wait_for_messages()
        messages = list(self._messages)
        self._messages.clear()
        self._note_messages_changed()
        return messages

    async def _wait_for_messages(self) -> None:
        """Until a message is held (a checkpoint even when one is); ``ConnectionLost`` once none is left
        on a broken connection."""
        await trio.lowlevel.checkpoint()
        while not self._messages:
            self._raise_if_broken()
            await self._messages_changed.wait()

    def _note_messages_changed(self) -> None:
        self._messages_changed.set()
        self._messages_changed = trio.Event()

    async def wait_closed(self) -> ConnectionLost:
        """Wait until the connection breaks; return why."""
        await self._closed.wait()
        assert self._broken is not None  # _break() sets it before it sets _closed
        return self._broken

    def abort(self, reason: str) -> None:
        """Break the connection now (its master moved): every caller waiting on it gets ``ConnectionLost``."""
        self._break(ConnectionLost(reason))

    def _raise_if_broken(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _break(self, reason: ConnectionLost) -> None:
        if self._broken is not None:
            return
        self._broken = reason
        for ticket in self._tickets:
            ticket.error = reason
            ticket.done.set()
        self._tickets.clear()
        self._note_messages_changed()
        self._closed.set()

    async def _read_replies(self) -> None:
        try:
            while True:
                data = await self._receive()
                if not data:
                    raise ConnectionLost("the bus closed the connection")
                self._reader.feed(data)  # type: ignore[arg-type]  # hiredis takes any buffer; its stub says str | bytes
                while (reply := self._reader.gets()) is not False:
                    self._deliver(reply)
                while len(self._messages) >= MESSAGES_HELD and self._broken is None:  # let the subscriber catch up
                    await self._messages_changed.wait()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, hiredis.ProtocolError) as exc:
            self._break(ConnectionLost(f"connection to the bus lost: {exc!r}"))
        except ConnectionLost as exc:
            self._break(exc)

    def _deliver(self, reply: Any) -> None:
        if self._subscribed and isinstance(reply, list) and reply and reply[0] in _PUSH_KINDS:
            if not self._messages:
                self._note_messages_changed()
            self._messages.append((reply[-2], reply[-1]))
            return
        if not self._tickets:
            raise ConnectionLost(f"unexpected reply from the bus: {reply!r:.100}")
        ticket = self._tickets[0]
        ticket.replies.append(reply)
        ticket.remaining -= 1
        if ticket.remaining == 0:
            self._tickets.popleft()
            ticket.done.set()
        if self.master is not None and isinstance(reply, ReplyError) and str(reply).startswith("READONLY"):
            host, port = self.master
            raise ConnectionLost(f"the bus at {host}:{port} is a replica now (READONLY): finding the master again")


@asynccontextmanager
async def connect(address: BusAddress, name: str = "") -> AsyncIterator[Connection]:
    """Open, authenticate and select the database; close on exit.

    Raises ``ConnectionLost`` when the bus cannot be reached and
    ``ReplyError`` when it refuses the credentials.
    """
    master = await find_master(address) if address.sentinels else None
    node = address.node(*master) if master else address
    async with _connected(node, master) as connection:
        await _handshake(connection, node, name, check_role=master is not None)
        yield connection


@asynccontextmanager
async def _connected(address: BusAddress, master: tuple[str, int] | None = None) -> AsyncIterator[Connection]:
    """A connection to ``address`` with its reader running, not yet authenticated."""
    stream = await _open_stream(address)
    try:
        async with trio.open_nursery() as nursery:
            connection = Connection(stream, master)
            nursery.start_soon(connection._read_replies)
            try:
                yield connection
            finally:
                connection._break(ConnectionLost("the connection was closed"))  # its descriptor goes with it
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery wraps what the caller's block raised: give callers the exception itself, so
        # ``except ConnectionLost`` and ``except ReplyError`` around ``connect()`` work.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def connect_sentinel(address: BusAddress, host: str, port: int) -> AsyncIterator[Connection]:
    """An authenticated connection to the sentinel at ``host:port`` (its own credentials, our TLS files)."""
    async with _connected(address.sentinel(host, port)) as connection:
        await _handshake(connection, address.sentinel(host, port), "")
        yield connection


async def find_master(address: BusAddress) -> tuple[str, int]:
    """Where the sentinels of ``address`` say the master of its service is: the first sentinel that knows
    answers. ``ConnectionLost`` says why none did (none reachable, credentials refused, service unknown)."""
    problems, unknown = [], []
    for host, port in address.sentinels:
        try:
            async with connect_sentinel(address, host, port) as sentinel:
                reply = await sentinel.execute("SENTINEL", "get-master-addr-by-name", address.service)
        except (ConnectionLost, ReplyError) as exc:
            problems.append(f"{host}:{port}: {exc}")
            continue
        if reply is None:
            unknown.append(f"{host}:{port}")
            continue
        return reply[0].decode(), int(reply[1])
    said = [f"service {address.service!r} is unknown to the sentinels at {', '.join(unknown)}"] if unknown else []
    raise ConnectionLost(f"no sentinel of {address.url} named a master: " + "; ".join(said + problems))


async def _open_stream(address: BusAddress) -> trio.abc.Stream:
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            if address.unix_path:
                stream: trio.abc.Stream = await trio.open_unix_socket(address.unix_path)
            else:
                stream = await trio.open_tcp_stream(address.host, address.port)
            context = address.ssl_context()
            if context is not None:
                stream = trio.SSLStream(stream, context, server_hostname=address.host)
                await stream.do_handshake()
            return stream
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        raise ConnectionLost(f"cannot reach the bus at {address.url}: {exc!r}") from None


async def _handshake(connection: Connection, address: BusAddress, name: str, check_role: bool = False) -> None:
    """Authenticate, select the database, name the connection; with ``check_role``, make sure the node is the
    master (a user whose ACL does not allow ``ROLE`` is taken at its word)."""
    commands: list[tuple[Any, ...]] = []
    if address.password is not None:
        user = (address.username,) if address.username else ()
        commands.append(("AUTH", *user, address.password))
    if address.db:
        commands.append(("SELECT", address.db))
    if name:
        commands.append(("CLIENT", "SETNAME", name.replace(" ", "_")))
    replies = await connection.pipeline([*commands, ("ROLE",)] if check_role else commands, raise_errors=False)
    role = replies.pop() if check_role else None
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise reply
    if role is not None:
        if isinstance(role, ReplyError) and str(role).startswith("NOPERM"):
            return
        if isinstance(role, ReplyError):
            raise role
        if role[0] != b"master":
            raise ConnectionLost(f"the node the sentinels named, {address.host}:{address.port}, is a "
                                 f"{role[0].decode()}, not the master (a failover is under way): asking again")
