"""The agent's tunnels: ``hubble_open_tunnel``, ``hubble_close_tunnel``, ``hubble_list_tunnels``.

A tunnel listens on a loopback port of this node; each connection it accepts
becomes a *stream* that a controller relays to the gateway: another agent,
which connects it to ``ip:remote`` on its side, or the controller itself.
This agent is also the gateway end of streams other agents open to it.

A tunnel belongs to the uplink (controller bus) its open command came from;
each uplink has an ``Endpoint`` that holds its tunnels and streams, listens
on the agent's ``tunnel:down`` channel and takes its ``tunnel:orders``.
Every key it touches is under the agent's own prefix. How a stream's bytes
travel is in ``daemon/pipe.py``; the whole design in ``docs/tunnels.md``.

Tunnels live as long as the agent process: after a restart they must be
opened again. Streams a previous run left are reported gone at start.
"""

import contextlib
import functools
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from acbus.connection import Connection, ConnectionLost, ReplyError
from acbus.link import Bus
from acdaemon.tunnel_pipe import Bell, Pipe, PipeBroken, dial
from agent.builtins import Builtin, BuiltinError, Node
from protocol import tunnels as wire
from protocol.command import Command
from protocol.errors import ProtocolError
from protocol.keys import AgentKeys

if TYPE_CHECKING:
    from agent.uplink import Uplink

log = logging.getLogger(__name__)

#: Where tunnels listen: only programs on this node can use them.
LISTEN_HOST = "127.0.0.1"
#: Seconds between two rounds of housekeeping (leases checked, list lifetimes renewed).
HOUSEKEEPING_INTERVAL = 1.0
#: Orders taken per round trip.
ORDERS_BATCH = 100
#: Seconds a stopping agent spends telling the controllers its streams are over.
GOODBYE_GRACE = 2.0
#: Seconds an endpoint with no tunnel, connection or question keeps listening to its tunnel channel.
IDLE_GRACE = 10.0
#: What the bus may answer instead of doing a command: it went away, or refused (LOADING, OOM...).
BUS_TROUBLE = (ConnectionLost, ReplyError)


@dataclass
class Tunnel:
    """One open tunnel: the port it listens on and where its connections go."""

    spec: wire.TunnelSpec
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    active: int = 0
    opened: int = 0
    failed: int = 0
    last_error: str | None = None

    def describe(self) -> dict[str, Any]:
        return {**self.spec.to_wire(), "connections": self.active, "opened": self.opened, "failed": self.failed,
                "last_error": self.last_error}


@dataclass
class Stream:
    """One connection carried by a tunnel, at either end."""

    id: str
    what: str  # for messages: "tunnel 4000 -> 2.1 127.0.0.1:22" or "gateway for 1.1 -> 127.0.0.1:22"
    pipe: Pipe | None = None
    lease_seen: bool = False
    started: float = field(default_factory=trio.current_time)
    reason: str = ""  # why it was aborted
    _scope: trio.CancelScope | None = None

    def abort(self, reason: str) -> None:
        self.reason = self.reason or reason
        if self._scope is not None:
            self._scope.cancel()

    @contextlib.contextmanager
    def abortable(self) -> Iterator[None]:
        """A block that ``abort`` cancels; it raises ``PipeBroken`` once the stream is aborted."""
        self._scope = trio.CancelScope()
        if self.reason:
            self._scope.cancel()
        with self._scope:
            yield
        self._scope = None
        if self.reason:
            raise PipeBroken(self.reason)


class Endpoint:
    """The tunnels and streams of one uplink."""

    def __init__(self, gid: int, nid: int, bus: Bus) -> None:
        self.me = wire.gateway_name(gid, nid)
        self.bus = bus
        self.keys = AgentKeys(gid, nid)
        self.tunnels: dict[int, Tunnel] = {}
        self.streams: dict[str, Stream] = {}
        self._probes: dict[str, list[str | None]] = {}
        self._probe_answered = Bell()
        self._orders = Bell()
        self._stream_started = Bell()
        self._wanted = Bell()  # something needs the subscription (a tunnel opened, a wake-up)
        self._woken = False  # a controller has orders for us (we were not listening)
        self._opening = 0  # tunnels being opened
        self._listening: trio.Event = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._ready = trio.Event()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._forget_leftovers()
            self._ready.set()
            nursery.start_soon(self._listen_while_needed)
            nursery.start_soon(self._take_orders)
            nursery.start_soon(self._housekeeping)

    def wake(self) -> None:
        """A controller has orders for us and we were not listening (it rang through our command queue)."""
        self._woken = True
        self._wanted.ring()

    @property
    def busy(self) -> bool:
        """Whether anything needs the tunnel bells: an open tunnel, a connection, a question asked."""
        return bool(self.tunnels or self.streams or self._probes or self._opening)

    async def _listen_while_needed(self) -> None:
        """Hold a subscription to our tunnel channel only while something needs it: an agent with no tunnel
        costs the bus no connection for them. A gateway with none is woken through its command queue."""
        while True:
            while not (self.busy or self._woken):
                await self._wanted.wait(self._wanted.rung, math.inf)
            self._woken = False
            await self.bus.serve_dedicated(self._listen)

    async def _until_listening(self) -> None:
        self._wanted.ring()
        await self._listening.wait()

    # -- the commands -------------------------------------------------------------------------

    async def open(self, spec: wire.TunnelSpec) -> dict[str, Any]:
        if spec.gateway == self.me:
            raise BuiltinError(f"gateway {spec.gateway!r} is this agent itself: a tunnel to self is refused "
                               f"(connect to {spec.ip}:{spec.remote} directly)")
        await self._ready.wait()
        self._opening += 1  # busy from now on: listen, so that the probe's answer is heard
        try:
            await self._until_listening()
            problem = await self._probe(spec.gateway)
        except BUS_TROUBLE as exc:
            raise BuiltinError(f"the bus failed while asking a controller about the gateway: {exc}") from None
        finally:
            self._opening -= 1
        if problem:
            raise BuiltinError(problem)
        try:
            listeners = await trio.open_tcp_listeners(spec.local, host=LISTEN_HOST)
        except OSError as exc:
            raise BuiltinError(f"cannot listen on {LISTEN_HOST}:{spec.local}: {exc.strerror or exc}") from None
        port = listeners[0].socket.getsockname()[1]
        tunnel = Tunnel(wire.TunnelSpec(port, spec.gateway, spec.ip, spec.remote))
        self.tunnels[port] = tunnel
        assert self._nursery is not None  # run() set it before _ready, which open() waited for
        self._nursery.start_soon(self._serve, tunnel, listeners)
        log.info("tunnel %d -> %s %s:%d open", port, spec.gateway, spec.ip, spec.remote)
        return tunnel.spec.to_wire()

    def close(self, spec: wire.TunnelSpec) -> bool:
        """Stop taking connections (those open go on until they end). ``False``: no such tunnel."""
        tunnel = self.tunnels.get(spec.local)
        if tunnel is None or tunnel.spec != spec:
            return False
        del self.tunnels[spec.local]
        tunnel.scope.cancel()
        log.info("tunnel %d -> %s %s:%d closed", spec.local, spec.gateway, spec.ip, spec.remote)
        return True

    def listing(self) -> list[dict[str, Any]]:
        return [tunnel.describe() for tunnel in self.tunnels.values()]

    async def _probe(self, gateway: str) -> str | None:
        """Ask a controller whether ``gateway`` can be reached; ``None`` when it can, else why not."""
        probe = uuid.uuid4().hex
        answer: list[str | None] = []
        self._probes[probe] = answer
        try:
            listening = await self._request(wire.encode(wire.PROBE, probe=probe, gateway=gateway))
            if not listening:
                return "no controller is listening for tunnel requests on the bus"
            with trio.move_on_after(wire.PROBE_TIMEOUT):
                while not answer:
                    await self._probe_answered.wait(self._probe_answered.rung)
                return answer[0]
            return f"no controller answered within {wire.PROBE_TIMEOUT:g} s"
        finally:
            del self._probes[probe]

    async def _request(self, message: str, *also: tuple[Any, ...]) -> int:
        """Queue a request for the controllers; the number of controllers that heard the bell."""
        replies = await self.bus.pipeline([*also, ("RPUSH", self.keys.tunnel_requests, message),
                                           ("PEXPIRE", self.keys.tunnel_requests, wire.KEY_TTL_MS),
                                           ("PUBLISH", self.keys.tunnel_up, wire.REQUESTS)])
        return replies[-1]

    # -- streams --------------------------------------------------------------------------------

    async def _serve(self, tunnel: Tunnel, listeners: list[trio.SocketListener]) -> None:
        with tunnel.scope:
            await trio.serve_listeners(functools.partial(self._initiate, tunnel), listeners,
                                       handler_nursery=self._nursery)

    async def _initiate(self, tunnel: Tunnel, sock: trio.SocketStream) -> None:
        """A program connected to the tunnel's port: ask a controller to relay it to the gateway."""
        spec = tunnel.spec
        stream = Stream(wire.new_stream_id(), f"tunnel {spec.local} -> {spec.gateway} {spec.ip}:{spec.remote}")
        request = wire.encode(wire.OPEN, stream=stream.id, gateway=spec.gateway, ip=spec.ip, remote=spec.remote)

        async def ask() -> trio.SocketStream:
            if not await self._request(request, *self._holding(stream.id)):
                raise PipeBroken("no controller is listening for tunnel requests on the bus")
            return sock

        tunnel.active += 1
        tunnel.opened += 1
        try:
            reason = await self._run_stream(stream, ask)
        finally:
            tunnel.active -= 1
        if reason:
            tunnel.failed += 1
            tunnel.last_error = reason

    async def _connect(self, order: dict[str, Any]) -> None:
        """The gateway end: connect to ``ip:remote`` and carry the stream."""
        stream = Stream(order["stream"], f"gateway for {order['peer']} -> {order['ip']}:{order['remote']}",
                        lease_seen=True)

        async def connect() -> trio.SocketStream:
            await self.bus.pipeline(self._holding(stream.id))
            sock = None
            try:
                with stream.abortable():
                    sock = await dial(order["ip"], order["remote"])
            except PipeBroken:
                if sock is not None:
                    await trio.aclose_forcefully(sock)
                raise
            return sock

        await self._run_stream(stream, connect)

    def _holding(self, stream_id: str) -> list[tuple[Any, ...]]:
        return [("SADD", self.keys.tunnel_streams, stream_id),
                ("PEXPIRE", self.keys.tunnel_streams, wire.KEY_TTL_MS)]

    async def _run_stream(self, stream: Stream, setup: Callable[[], Awaitable[trio.SocketStream]]) -> str:
        """Set a stream up, relay its bytes until it ends, let go of it; return why it broke ("" if it did not).
        Every key of the stream is gone afterwards, except chunks still on their way to the peer."""
        self.streams[stream.id] = stream
        self._stream_started.ring()
        reason = "the agent stopped"
        try:
            sock = await setup()
            relay = ("PUBLISH", self.keys.tunnel_up, wire.bell(wire.RELAY, stream.id))
            stream.pipe = Pipe(self.bus, sock, self.keys.stream_in(stream.id), self.keys.stream_out(stream.id),
                               pushed=relay, popped=relay)
            with stream.abortable():
                await stream.pipe.run()
            reason = ""
        except PipeBroken as exc:
            reason = str(exc)
        except BUS_TROUBLE as exc:
            reason = f"the bus failed: {exc}"
        finally:
            await self._end(stream, reason)
        return reason

    async def _end(self, stream: Stream, reason: str) -> None:
        """Let go of a stream: ``reason`` empty when it ended well, else tell the controllers why."""
        del self.streams[stream.id]
        keys, sid = self.keys, stream.id
        commands: list[tuple[Any, ...]] = [("SREM", keys.tunnel_streams, sid), ("DEL", keys.stream_in(sid)),
                                           ("DEL", keys.stream_lease(sid))]
        if reason:
            log.warning("%s: connection %s reset: %s", stream.what, sid, reason)
            commands += [("DEL", keys.stream_out(sid)),
                         ("PUBLISH", keys.tunnel_up, wire.bell(wire.RESET, sid, reason))]
        # If the bus is away, the keys expire and the controller sees the stream gone from our set.
        with trio.CancelScope(shield=True), trio.move_on_after(GOODBYE_GRACE), contextlib.suppress(*BUS_TROUBLE):
            await self.bus.pipeline(commands)

    # -- orders and bells ---------------------------------------------------------------------

    async def _listen(self, connection: Connection) -> None:
        """Hear the bells of our tunnel channel; return once nothing has needed them for ``IDLE_GRACE`` s."""
        await connection.subscribe(self.keys.tunnel_down)
        self._listening.set()
        try:
            await self._hear(connection)
        finally:
            self._listening = trio.Event()

    async def _hear(self, connection: Connection) -> None:
        # Bells rung while we were not listening are lost: look at everything once.
        self._orders.ring()
        for known in list(self.streams.values()):
            if known.pipe is not None:
                known.pipe.data_arrived()
                known.pipe.room_made()
        idle_since = None if self.busy else trio.current_time()
        while True:
            payload = None
            with trio.move_on_after(IDLE_GRACE / 4):
                _, payload = await connection.next_message()
            if self.busy or self._woken:
                idle_since = None
            elif idle_since is None:
                idle_since = trio.current_time()
            elif trio.current_time() - idle_since >= IDLE_GRACE:
                return
            if payload is None:
                continue
            try:
                kind, stream_id, _ = wire.parse_bell(payload)
            except ProtocolError as exc:
                log.warning("ignoring a tunnel bell: %s", exc)
                continue
            if kind == wire.ORDERS:
                self._orders.ring()
                continue
            stream = self.streams.get(stream_id)
            if stream is None or stream.pipe is None:
                continue
            if kind == wire.DATA:
                stream.pipe.data_arrived()
            elif kind == wire.ROOM:
                stream.pipe.room_made()

    async def _take_orders(self) -> None:
        take = functools.partial(self.bus.execute, "LPOP", self.keys.tunnel_orders, ORDERS_BATCH)
        while True:
            seen = self._orders.rung
            raws = await self.bus.keep_trying(take, "taking tunnel orders") or []
            for raw in raws:
                self._obey(raw)
            if len(raws) < ORDERS_BATCH:
                await self._orders.wait(seen, math.inf)  # on every (re)subscription it rings anyway

    def _obey(self, raw: bytes) -> None:
        try:
            order = wire.decode_order(raw)
        except ProtocolError as exc:
            log.warning("ignoring a tunnel order: %s", exc)
            return
        if order["op"] == wire.PROBE:
            answer = self._probes.get(order["probe"])
            if answer is not None:
                answer.append(order["error"])
                self._probe_answered.ring()
        elif order["op"] == wire.CONNECT:
            if order["stream"] not in self.streams:
                assert self._nursery is not None  # orders are taken by a task of run()'s nursery
                self._nursery.start_soon(self._connect, order)
        elif order["op"] == wire.ABORT:
            stream = self.streams.get(order["stream"])
            if stream is not None:
                stream.abort(order["reason"])

    # -- housekeeping ----------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Renew the lifetime of our stream keys; give up streams no controller relays any more."""
        while True:
            if not self.streams:  # an idle agent does nothing
                await self._stream_started.wait(self._stream_started.rung, math.inf)
            await trio.sleep(HOUSEKEEPING_INTERVAL)
            streams = list(self.streams.values())
            if not streams:
                continue
            keys = self.keys
            commands: list[tuple[Any, ...]] = [("PEXPIRE", keys.tunnel_streams, wire.KEY_TTL_MS)]
            for stream in streams:
                commands += [("EXISTS", keys.stream_lease(stream.id)),
                             ("PEXPIRE", keys.stream_in(stream.id), wire.KEY_TTL_MS),
                             ("PEXPIRE", keys.stream_out(stream.id), wire.KEY_TTL_MS)]
            try:
                replies = await self.bus.pipeline(commands)
                for stream, leased in zip(streams, replies[1::3], strict=True):
                    self._check_lease(stream, bool(leased))
            except BUS_TROUBLE as exc:
                log.warning("checking tunnel leases: %s", exc)

    def _check_lease(self, stream: Stream, leased: bool) -> None:
        if leased or (stream.pipe is not None and stream.pipe.arrived):
            stream.lease_seen = True
        if leased:
            return
        if not stream.lease_seen:
            if trio.current_time() - stream.started > wire.OPEN_TIMEOUT:
                stream.abort(f"no controller took the connection within {wire.OPEN_TIMEOUT:g} s")
            return
        # The controller lets the leases go when both ends have sent their FIN: what is left for us is
        # already in our list. Otherwise the controller relaying the stream is gone.
        gone = "no controller relays the connection any more"
        if stream.pipe is None or not stream.pipe.sent_fin:
            stream.abort(gone)
        else:
            stream.pipe.relay_gone(gone)

    async def _forget_leftovers(self) -> None:
        """Streams a previous run of this agent held are over: clear their keys, tell the controllers."""
        keys = self.keys

        async def forget() -> list[str]:
            leftovers = [raw.decode() for raw in await self.bus.execute("SMEMBERS", keys.tunnel_streams)]
            commands: list[tuple[Any, ...]] = []
            for sid in leftovers:
                reset = wire.bell(wire.RESET, sid, "the agent restarted")
                commands += [("DEL", keys.stream_in(sid), keys.stream_out(sid), keys.stream_lease(sid)),
                             ("PUBLISH", keys.tunnel_up, reset)]
            await self.bus.pipeline([*commands, ("DEL", keys.tunnel_streams)])
            return leftovers

        leftovers = await self.bus.keep_trying(forget, "clearing the tunnel connections of a previous run")
        if leftovers:
            log.info("let go of %d tunnel connections a previous run of the agent held", len(leftovers))


class Tunnels:
    """The tunnel commands, and one ``Endpoint`` per uplink."""

    def __init__(self, gid: int, nid: int, uplinks: dict[str, "Uplink"]) -> None:
        self.endpoints = {name: Endpoint(gid, nid, uplink.bus) for name, uplink in uplinks.items()}

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for endpoint in self.endpoints.values():
                nursery.start_soon(endpoint.run)

    def wake(self, uplink: "Uplink") -> None:
        """A controller rang us through ``uplink``'s command queue: it has tunnel orders for us."""
        self.endpoints[uplink.name].wake()

    def builtin(self, cmd: str, uplink: "Uplink") -> Builtin | None:
        """The built-in answering a tunnel command that came from ``uplink`` (tunnels go over that bus)."""
        handler = _COMMANDS.get(cmd)
        if handler is None:
            return None
        endpoint = self.endpoints[uplink.name]

        async def answer(node: Node, command: Command) -> Any:
            return await handler(endpoint, command)

        return Builtin(answer, inline=False)


async def _open(endpoint: Endpoint, command: Command) -> dict[str, Any]:
    return await endpoint.open(_spec(command))


async def _close(endpoint: Endpoint, command: Command) -> bool:
    endpoint.close(_spec(command))
    return True


async def _list(endpoint: Endpoint, command: Command) -> list[dict[str, Any]]:
    return endpoint.listing()


_COMMANDS: dict[str, Callable[[Endpoint, Command], Awaitable[Any]]] = {
    wire.OPEN_COMMAND: _open,
    wire.CLOSE_COMMAND: _close,
    wire.LIST_COMMAND: _list,
}


def _spec(command: Command) -> wire.TunnelSpec:
    try:
        data = json.loads(command.data) if command.data.strip() else {}
    except ValueError:
        raise BuiltinError(f"data: expected a JSON object, got {command.data[:80]!r}") from None
    if not isinstance(data, dict):
        raise BuiltinError("data: expected a JSON object with local, gateway, ip, remote")
    try:
        return wire.TunnelSpec.from_wire(data)
    except ProtocolError as exc:
        raise BuiltinError(str(exc)) from None

