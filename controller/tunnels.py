"""Relaying tunnel connections between agents (and serving those whose gateway is the controller).

An agent that accepted a connection on one of its tunnels queues an ``open``
request on its own ``tunnel:requests`` list and rings its ``tunnel:up``
channel. Every controller hears the bell; the one whose ``LPOP`` gets the
request owns the connection from then on (``tunnel_open.lua`` records it and
orders the gateway to connect). The owner alone relays it: on each
``relay <stream>`` bell it runs ``tunnel_relay.lua``, which moves chunks
between the two agents' lists inside Redis (the bytes never come to the
controller) and rings the agents. When the gateway is ``"controller"``, the
owner connects to ``ip:remote`` itself and runs a ``Pipe`` on the agent's lists.

The owner keeps a lease key alive for each end; an end whose lease is gone
knows no controller relays its connection any more. Failures:

* an end resets its connection (bell ``reset``): the owner tells the other end;
* an end's agent is lost (no heartbeat), or restarted (its stream set no
  longer holds the connection): the owner tells the other end and clears
  what the lost end left;
* the owner dies: a peer adopts its connections once its heartbeat expired
  (``tunnel_adopt.lua``) and relays them on, except those the dead owner
  served itself (gateway ``"controller"``), which are reset. With no peer,
  the leases run out and both ends give up.

Details in ``docs/tunnels.md``.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from acbus.connection import Connection, ConnectionLost, ReplyError
from acbus.link import IDLE_REST_CAP, Bus, Pending, open_bus, raise_refusal, refusal_kind
from acdaemon.logs import LogBudget
from acdaemon.tunnel_pipe import Pipe, PipeBroken, dial
from controller import scripts
from controller.config import ControllerConfig
from controller.registry import Registry
from protocol import keys
from protocol import tunnels as wire
from protocol.errors import ProtocolError
from protocol.keys import AgentKeys

log = logging.getLogger(__name__)

#: Requests taken from one agent's list per round trip.
REQUESTS_BATCH = 64
#: Seconds a gateway has to take up its connect order (it answers a failure to connect itself).
ORDER_TIMEOUT = 3 * wire.CONNECT_TIMEOUT

Agent = tuple[int, int]


@dataclass
class Relayed:
    """A tunnel connection this controller owns."""

    id: str
    a: Agent  # the agent whose tunnel accepted the connection
    b: Agent | None  # the gateway agent; None: this controller is the gateway
    ip: str
    remote: int
    since: float = field(default_factory=trio.current_time)
    gateway_seen: bool = False  # the gateway agent was seen holding the stream
    pipe: Pipe | None = None
    scope: trio.CancelScope | None = None
    reason: str = ""

    @property
    def ends(self) -> list[Agent]:
        return [self.a] if self.b is None else [self.a, self.b]


def _name(agent: Agent) -> str:
    return keys.agent_name(*agent)


class TunnelRelay:
    """Relays tunnel connections between agents (and serves the controller gateway), adopting a dead peer's."""

    def __init__(self, config: ControllerConfig, bus: Bus, registry: Registry, controller_id: str) -> None:
        self.config = config
        self.main_bus = bus
        self.granted: set[tuple[Agent, str]] = set()  # grants seen in keys.tunnel_grants
        self.bus = bus  # replaced by a bus of our own in run(): tunnel traffic does not delay routing
        self.registry = registry
        self.id = controller_id
        self.lease_ms = int(config.takeover_after * 3 * 1000)
        self.owned: dict[str, Relayed] = {}
        self._to_relay: Pending[str] = Pending()  # streams that changed
        self._asking: Pending[Agent] = Pending(self._flooded)  # agents whose request lists rang
        self._nursery: trio.Nursery | None = None
        self._refreshed_at = 0.0
        self.bell_floods = 0  # times an agent rang its tunnel bell again and again with no request waiting
        self._agent_log = LogBudget(log)  # what agents asked that was refused, said within a budget

    async def run(self) -> None:
        async with open_bus(self.main_bus.address, f"{self.main_bus.name}-tunnels") as bus:
            self.bus = bus
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.bus.serve_dedicated, self._listen)
                nursery.start_soon(self._asking.serve, self.bus, self._take_requests, "taking tunnel requests")
                nursery.start_soon(self._to_relay.serve, self.bus, self._relay, "relaying tunnel connections")
                nursery.start_soon(self._watch)

    @property
    def _tasks(self) -> trio.Nursery:
        assert self._nursery is not None  # run() sets it before it starts anything that starts tasks
        return self._nursery

    # -- bells ------------------------------------------------------------------------------------

    async def _listen(self, connection: Connection) -> None:
        await connection.psubscribe(keys.AGENT_TUNNEL_UP_PATTERN)
        # Bells rung while we were not listening are lost: look at every request list and connection.
        for gid, nid in list(self.registry.agents):
            self._asked((gid, nid))
        for owned in self.owned.values():
            self._changed(owned)
        while True:
            for channel, payload in dict.fromkeys(await connection.next_messages()):  # the same bell once
                self._heard(channel, payload)

    def _heard(self, channel: bytes, payload: bytes) -> None:
        try:
            agent = keys.agent_of(channel.decode("utf-8", "replace"))
            kind, stream_id, reason = wire.parse_bell(payload)
        except (ValueError, ProtocolError) as exc:
            self._agent_log.log("bell", logging.WARNING, "ignoring a tunnel bell on %r: %s", channel[:200], exc)
            return
        if kind == wire.REQUESTS:
            self._asked(agent)
            return
        stream = self.owned.get(stream_id)
        if stream is None or agent not in stream.ends:
            return
        if kind == wire.RELAY:
            self._changed(stream)
        elif kind == wire.RESET:
            side = "gateway agent" if agent == stream.b else "agent"
            why = f"{side} {_name(agent)}: {reason or 'reset the connection'}"
            self._tasks.start_soon(self._reset, stream, why, agent)

    def _flooded(self, agent: Agent) -> None:
        self.bell_floods += 1
        log.warning("agent %s rings its tunnel bell again and again with no request waiting (a flood, or a broken "
                    "agent): its requests are read at most every %g s until that stops", _name(agent), IDLE_REST_CAP)

    def _asked(self, agent: Agent) -> None:
        self._asking.mark(agent)

    def _changed(self, stream: Relayed) -> None:
        if stream.pipe is not None:
            stream.pipe.data_arrived()
            stream.pipe.room_made()
        elif stream.b is not None:
            self._to_relay.mark(stream.id)

    # -- requests -----------------------------------------------------------------------------------

    async def _take_requests(self, agents: list[Agent]) -> list[Agent]:
        """Answer these agents' tunnel requests; return those that had none (``Pending`` paces an agent that
        rings for nothing)."""
        replies = await self.bus.pipeline([("LPOP", AgentKeys(*agent).tunnel_requests, REQUESTS_BATCH)
                                           for agent in agents], raise_errors=False)
        idle = []
        for agent, raws in zip(agents, replies, strict=True):
            if isinstance(raws, ReplyError):  # (a refusal is tried again below, after the others)
                if refusal_kind(raws) is None:  # say, its agent made the list something else
                    self._agent_log.log((agent, "requests"), logging.WARNING, "taking the tunnel requests of agent "
                                        "%s failed: %s", _name(agent), raws)
                idle.append(agent)
                continue
            if not raws:
                idle.append(agent)
            elif len(raws) == REQUESTS_BATCH:
                self._asked(agent)
            for raw in raws or []:
                self._tasks.start_soon(self._answer, agent, raw)
        raise_refusal(replies)
        return idle

    async def _answer(self, agent: Agent, raw: bytes) -> None:
        try:
            request = wire.decode_request(raw)
        except ProtocolError as exc:
            self._agent_log.log((agent, "request"), logging.WARNING, "agent %s sent an unusable tunnel request: %s",
                                _name(agent), exc)
            return
        try:
            if request["op"] == wire.PROBE:
                problem = await self._check_gateway(agent, request["gateway"], must_be_alive=False)
                await self._order(agent, wire.encode(wire.PROBE, probe=request["probe"], error=problem))
            else:
                await self._open(agent, request)
        except (ConnectionLost, ReplyError) as exc:
            log.warning("answering a tunnel request of agent %s failed: %s", _name(agent), exc)

    async def _check_gateway(self, agent: Agent, gateway: str, must_be_alive: bool) -> str | None:
        """Why ``agent`` cannot open a connection to ``gateway`` (``None``: it can)."""
        target = wire.parse_gateway(gateway)
        if target is None:
            return None
        if target == agent:
            return f"gateway {gateway} is the agent itself: a tunnel to self is refused"
        view = self.registry.get(*target)
        if view is None or not view.alive:
            await self.registry.revive(self.main_bus)
            view = self.registry.get(*target)
        if view is None:
            return f"unknown gateway {gateway}: no agent {_name(target)} ever registered"
        if must_be_alive and not view.alive:
            return f"gateway agent {_name(target)} is not alive"
        return None

    async def _check_grant(self, agent: Agent, request: dict[str, Any]) -> str | None:
        """Why ``agent`` may not reach this target (``None``: a client opened such a tunnel on it).
        A compromised node may send any request: it only gets where a client let it go."""
        grant = (agent, wire.grant(request["gateway"], request["ip"], request["remote"]))
        if grant in self.granted or await self.main_bus.execute("HEXISTS", keys.tunnel_grants(*agent), grant[1]):
            self.granted.add(grant)  # also when a bus restarting empty forgets it
            return None
        return (f"no client opened a tunnel on agent {_name(agent)} to {request['ip']}:{request['remote']} "
                f"through {request['gateway']}")

    async def _open(self, agent: Agent, request: dict[str, Any]) -> None:
        stream_id = request["stream"]
        problem = await self._check_grant(agent, request) or \
            await self._check_gateway(agent, request["gateway"], must_be_alive=True)
        if problem:
            self._agent_log.log((agent, "refused"), logging.INFO, "refused a connection of agent %s: %s",
                                _name(agent), problem)
            await self._order(agent, wire.encode(wire.ABORT, stream=stream_id, reason=problem))
            return
        gateway = wire.parse_gateway(request["gateway"])
        stream = Relayed(stream_id, agent, gateway, request["ip"], request["remote"])
        a = AgentKeys(*agent)
        script_keys = [keys.tunnel_record(stream_id), keys.tunnels_owned(self.id), keys.TUNNEL_OWNERS,
                       a.tunnel_streams, a.stream_lease(stream_id)]
        args = [stream_id, self.id, _name(agent), _name(gateway) if gateway else wire.CONTROLLER_GATEWAY,
                stream.ip, stream.remote, self.lease_ms, wire.KEY_TTL_MS]
        if gateway is not None:
            b = AgentKeys(*gateway)
            script_keys += [b.stream_lease(stream_id), b.tunnel_orders, b.commands]
            args += [wire.encode(wire.CONNECT, stream=stream_id, ip=stream.ip, remote=stream.remote,
                                 peer=wire.gateway_name(*agent)), b.tunnel_down, wire.WAKE_UP]
        outcome = (await scripts.TUNNEL_OPEN.run(self.bus, script_keys, args)).decode()
        if outcome == "exists":
            self._agent_log.log((agent, "exists"), logging.WARNING, "agent %s asked to open connection %s, which "
                                "exists already", _name(agent), stream_id)
            await self._order(agent, wire.encode(wire.ABORT, stream=stream_id, reason="stream id in use"))
            return
        if outcome == "gone":
            return  # the agent gave up waiting
        self.owned[stream_id] = stream
        log.debug("relaying connection %s: agent %s -> %s %s:%d", stream_id, _name(agent), request["gateway"],
                  stream.ip, stream.remote)
        if gateway is None:
            self._tasks.start_soon(self._serve_locally, stream)
        else:
            self._changed(stream)  # chunks may be waiting already

    async def _order(self, agent: Agent, order: str) -> None:
        target = AgentKeys(*agent)
        *_, heard = await self.bus.pipeline([("RPUSH", target.tunnel_orders, order),
                                             ("PEXPIRE", target.tunnel_orders, wire.KEY_TTL_MS),
                                             ("PUBLISH", target.tunnel_down, wire.ORDERS)])
        if not heard:  # it does not listen (no tunnel of its own): wake it through its command queue
            await self.bus.execute("RPUSH", target.commands, wire.WAKE_UP)

    # -- relaying -------------------------------------------------------------------------------------

    async def _relay(self, stream_ids: list[str]) -> None:
        streams = [self.owned[sid] for sid in stream_ids if sid in self.owned]
        replies = await self._run_all(scripts.TUNNEL_RELAY, [self._relay_call(s) for s in streams])
        for stream, reply in zip(streams, replies, strict=True):
            if isinstance(reply, Exception):
                if refusal_kind(reply) is None:  # a refusal is tried again below, after the others
                    self._agent_log.log((tuple(stream.ends), "relay"), logging.ERROR, "relaying connection %s "
                                        "failed: %s", stream.id, reply)
            elif reply[0] != 0:
                self._forget(stream, "finished" if reply[0] == 1 else "no longer ours")
        raise_refusal(replies)

    def _relay_call(self, stream: Relayed) -> tuple[Sequence[str], Sequence[Any]]:
        assert stream.b is not None  # only streams with a gateway agent are marked for relaying (_changed)
        a, b, sid = AgentKeys(*stream.a), AgentKeys(*stream.b), stream.id
        return ([keys.tunnel_record(sid), a.stream_out(sid), b.stream_in(sid), b.stream_out(sid), a.stream_in(sid),
                 a.stream_lease(sid), b.stream_lease(sid), keys.tunnels_owned(self.id)],
                [sid, self.id, wire.WINDOW, wire.KEY_TTL_MS, a.tunnel_down, b.tunnel_down])

    async def _run_all(self, script: scripts.Script, calls: list[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run ``script`` once per call, pipelined; error replies in place."""
        return await scripts.pipeline(self.bus, [script.evalsha(script_keys, args) for script_keys, args in calls])

    def _forget(self, stream: Relayed, why: str) -> None:
        if self.owned.get(stream.id) is stream:
            del self.owned[stream.id]
            log.log(logging.INFO if why.startswith("reset") else logging.DEBUG, "connection %s %s", stream.id, why)

    async def _reset(self, stream: Relayed, reason: str, gone: Agent | None = None) -> None:
        """End ``stream``: tell every end but ``gone`` why, and clear what ``gone`` left (it may be dead, or
        have cleared them itself just before a last relay filled its ``in`` list again)."""
        if self.owned.get(stream.id) is not stream:
            return
        self._forget(stream, f"reset: {reason}")
        if stream.scope is not None:
            stream.reason = stream.reason or reason
            stream.scope.cancel()
        sid = stream.id
        tell = [AgentKeys(*end) for end in stream.ends if end != gone]
        dead = [AgentKeys(*gone)] if gone is not None else []
        script_keys = [keys.tunnel_record(sid), keys.tunnels_owned(self.id), *(end.tunnel_orders for end in tell)]
        script_keys += [key for end in dead for key in (end.stream_in(sid), end.stream_out(sid), end.stream_lease(sid))]
        script_keys += [end.tunnel_streams for end in dead]
        args = [sid, len(tell), 3 * len(dead), wire.encode(wire.ABORT, stream=sid, reason=reason), wire.KEY_TTL_MS,
                *(end.tunnel_down for end in tell)]
        try:  # on the main bus: when the controller stops, ours goes down with the tasks using it
            await scripts.TUNNEL_RESET.run(self.main_bus, script_keys, args)
        except (ConnectionLost, ReplyError) as exc:
            log.warning("resetting connection %s failed (%s); its leases will run out", sid, exc)

    # -- the controller as the gateway ----------------------------------------------------------------

    async def _serve_locally(self, stream: Relayed) -> None:
        a, sid = AgentKeys(*stream.a), stream.id
        stream.scope = trio.CancelScope()
        reason = "the controller stopped"
        try:
            with stream.scope:
                sock = await dial(stream.ip, stream.remote)
                stream.pipe = Pipe(self.bus, sock, a.stream_out(sid), a.stream_in(sid),
                                   pushed=("PUBLISH", a.tunnel_down, wire.bell(wire.DATA, sid)),
                                   popped=("PUBLISH", a.tunnel_down, wire.bell(wire.ROOM, sid)))
                await stream.pipe.run()
                reason = ""
            if stream.scope.cancelled_caught:
                reason = stream.reason
        except PipeBroken as exc:
            reason = str(exc)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(wire.CONNECT_TIMEOUT):
                if reason:
                    await self._reset(stream, reason, gone=None)
                elif self.owned.get(sid) is stream:
                    self._forget(stream, "finished")
                    await self.main_bus.pipeline([("DEL", keys.tunnel_record(sid), a.stream_lease(sid)),
                                                  ("SREM", keys.tunnels_owned(self.id), sid)])

    # -- watching ---------------------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Every sweep: reset connections whose agent was lost; now and then renew leases, check that both
        ends still hold their connections, and adopt the connections of dead controllers."""
        while True:
            try:
                await self._reset_lost()
                if trio.current_time() - self._refreshed_at >= self.config.takeover_after:
                    self._refreshed_at = trio.current_time()
                    await self._adopt_orphans()
                    await self._refresh()
            except (ConnectionLost, ReplyError) as exc:
                log.warning("watching tunnel connections interrupted: %s", exc)
            await trio.sleep(self.config.sweep_interval)

    async def _reset_lost(self) -> None:
        for stream in list(self.owned.values()):
            for end in stream.ends:
                view = self.registry.get(*end)
                if view is not None and not view.alive:
                    role = "agent" if end == stream.a else "gateway agent"
                    await self._reset(stream, f"{role} {_name(end)} lost", gone=end)
                    break

    async def _refresh(self) -> None:
        """Renew leases and records; reset connections an end no longer holds."""
        streams = list(self.owned.values())
        commands: list[tuple[Any, ...]] = [("PEXPIRE", keys.tunnels_owned(self.id), self.lease_ms)]
        for stream in streams:
            sid = stream.id
            commands.append(("HGET", keys.tunnel_record(sid), "owner"))
            commands.append(("PEXPIRE", keys.tunnel_record(sid), self.lease_ms))
            for end in stream.ends:
                end_keys = AgentKeys(*end)
                commands += [("PEXPIRE", end_keys.stream_lease(sid), self.lease_ms),
                             ("SISMEMBER", end_keys.tunnel_streams, sid), ("LLEN", end_keys.stream_out(sid))]
        replies = iter((await self.bus.pipeline(commands))[1:])
        for stream in streams:
            owner, _ = next(replies), next(replies)
            holding = []
            for _ in stream.ends:
                _, member, waiting = next(replies), next(replies), next(replies)
                holding.append(bool(member) or waiting > 0)
            if owner != self.id.encode():
                self._forget(stream, "no longer ours")
                continue
            if stream.b is not None and holding[1]:
                stream.gateway_seen = True
            await self._check_holding(stream, holding)

    async def _check_holding(self, stream: Relayed, holding: list[bool]) -> None:
        if not holding[0]:
            await self._reset(stream, f"agent {_name(stream.a)} let go of the connection", gone=stream.a)
        elif stream.b is not None and not holding[1]:
            if stream.gateway_seen:
                await self._reset(stream, f"gateway agent {_name(stream.b)} let go of the connection",
                                  gone=stream.b)
            elif trio.current_time() - stream.since > ORDER_TIMEOUT:
                await self._reset(stream, f"gateway agent {_name(stream.b)} did not take the connection up "
                                  f"within {ORDER_TIMEOUT:g} s", gone=stream.b)

    async def _adopt_orphans(self) -> None:
        owners = {member.decode() for member in await self.bus.execute("SMEMBERS", keys.TUNNEL_OWNERS)}
        owners.discard(self.id)
        for owner in sorted(owners):
            taken = await scripts.TUNNEL_ADOPT.run(
                self.bus, [keys.tunnels_owned(owner), keys.tunnels_owned(self.id), keys.TUNNEL_OWNERS,
                           keys.controller_alive(owner)],
                [owner, self.id, keys.tunnel_record(""), self.lease_ms])
            if taken == -1 or not taken:
                continue
            log.warning("controller %s is gone: relaying its %d tunnel connections", owner, len(taken))
            records = await self.bus.pipeline([("HGETALL", keys.tunnel_record(raw.decode())) for raw in taken])
            for raw, flat in zip(taken, records, strict=True):
                self._adopt(raw.decode(), dict(zip(flat[::2], flat[1::2], strict=True)))

    def _adopt(self, stream_id: str, record: dict[bytes, bytes]) -> None:
        try:
            a = keys.parse_agent_name(record[b"a"].decode())
            b_name = record[b"b"].decode()
            b = None if b_name == wire.CONTROLLER_GATEWAY else keys.parse_agent_name(b_name)
            stream = Relayed(stream_id, a, b, record[b"ip"].decode(), int(record[b"remote"]), gateway_seen=True)
        except (KeyError, ValueError) as exc:
            log.error("cannot adopt connection %s: its record is unreadable (%r)", stream_id, exc)
            return
        self.owned[stream_id] = stream
        if b is None:  # its gateway was the dead controller: the connection went with it
            self._tasks.start_soon(self._reset, stream, "the controller serving the connection is gone")
        else:
            self._changed(stream)

