"""Taking commands from ``cmds_queue`` and routing them.

A lane claims a batch into its inflight list, decides every command of it in
memory (``Batch``), then commits all decisions with one script call that also
empties the inflight list. If the controller dies anywhere in between, the
batch is still in the inflight list, and a peer (or this controller's
successor) puts it back on ``cmds_queue``.

A controller runs two lanes, each with its own connection and inflight list
(to peers they look like two controllers), so that one decides while Redis
applies the other's batch; a ``Sequencer`` keeps the batches in order.

``stop`` ends the intake cleanly: no lane claims again, and a batch already
claimed is routed to the end. A claim cut short may have moved commands into
the lane's inflight list; the controller hands those back when it stops.
"""

import collections
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from functools import partial

import trio

from acbus.connection import Connection, ConnectionLost, ReplyError
from acbus.link import Bus
from acdaemon.metrics import Histogram
from controller import scripts
from controller.batch import Batch
from controller.config import ControllerConfig
from controller.registry import AgentView, Registry
from controller.rollouts import start_rollout
from controller.routing import NoRoute, Router
from controller.sequencer import Sequencer
from protocol import keys, tunnels
from protocol.command import CONTROLLER_CMD, Command, MalformedCommand, decode_command, usable_id
from protocol.errors import ProtocolError
from protocol.fields import is_integer
from protocol.job import Job, error_job

log = logging.getLogger(__name__)

#: A batch stops growing after the command that brings it to this many bytes.
BATCH_BYTES = 4 * 1024 * 1024
#: Lanes per controller.
LANES = 2
#: Seconds a lane waits in ``BLMOVE`` before it lets the other lane claim: bounds how long a lane that
#: reconnected with a batch it had claimed waits for its turn while ``cmds_queue`` stays empty.
CLAIM_WAIT = 1.0
#: Upper bounds (seconds) of the routing latency histogram: from a batch's claim to its commit.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

#: A command to decide again after a second look at the agents: with the dead targets to look at again
#: (``None``: it found no agent at all, so every registration is read again).
Unroutable = tuple[Command, bytes, list[AgentView] | None]

#: Answers a ``cmd = "controller"`` command: stages its writes in the batch, returns the answer.
BuiltinsHandler = Callable[[Command, Batch], Awaitable[Job]]


def lane_ids(controller_id: str) -> list[str]:
    """The ids a controller's lanes claim under (each has an inflight list and a heartbeat)."""
    return [controller_id] + [f"{controller_id}.{lane}" for lane in range(1, LANES)]


class Intake:
    """Claims commands from ``cmds_queue`` in batches and routes them, in two lanes, in order."""

    def __init__(self, config: ControllerConfig, bus: Bus, registry: Registry, controller_id: str,
                 builtins: BuiltinsHandler) -> None:
        self.config = config
        self.bus = bus
        self.registry = registry
        self.lanes = lane_ids(controller_id)
        self.builtins = builtins
        self.sequencer = Sequencer()
        # What a scrape of the metrics reads:
        self.routed = 0  # commands sent to agents (one per target)
        self.dead_letters = 0
        self.answers: collections.Counter[str] = collections.Counter()  # answered at once, by state
        self.latency = Histogram("ac_controller_routing_seconds", "Seconds from claiming a command to committing "
                                 "where it goes (per command)", LATENCY_BOUNDS)
        self._lanes_serving: set[str] = set()
        self._serving = trio.Event()
        self._stopping = False
        self._claims: set[trio.CancelScope] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Route until ``stop``; started (``nursery.start``) once every lane takes commands."""
        async with trio.open_nursery() as nursery:
            for lane in self.lanes:
                nursery.start_soon(self.bus.serve_dedicated, partial(self._serve, lane))
            await self._serving.wait()
            task_status.started()

    def stop(self) -> None:
        """Claim no more commands; ``run`` returns once the batches already claimed are routed."""
        self._stopping = True
        for claim in self._claims:
            claim.cancel()

    async def _serve(self, lane: str, connection: Connection) -> None:
        """Route on a connection of the lane's own (it blocks in ``BLMOVE``) until ``stop``.

        Whatever is in the lane's inflight list when it starts (commands claimed
        just before a lost connection, or a batch whose commit failed) is routed first.
        """
        inflight = keys.controller_inflight(lane)
        leftover = await connection.execute("LRANGE", inflight, 0, -1)
        if leftover:
            log.info("routing %d commands claimed before", len(leftover))
            leftover_time = bus_ms(await connection.execute("TIME"))
        self._lanes_serving.add(lane)
        if self._lanes_serving.issuperset(self.lanes):
            self._serving.set()
        while not self._stopping:
            with trio.CancelScope() as claim:
                self._claims.add(claim)
                try:
                    async with self.sequencer.claiming() as ticket:
                        raws, now_ms = (leftover, leftover_time) if leftover else await self._claim(connection, lane)
                        leftover = []
                finally:
                    self._claims.discard(claim)
            if claim.cancelled_caught:
                return  # its reply may be unread: this connection is done
            if raws:
                await self._route_batch(connection, inflight, raws, ticket, trio.current_time(), now_ms)
            else:
                self.sequencer.skip(ticket)

    async def _claim(self, connection: Connection, lane: str) -> tuple[list[bytes], int]:
        """Wait (up to ``CLAIM_WAIT``) for a command, and take the batch waiting behind it in the same round
        trip (nothing when none came); with the bus's time of the claim (epoch ms)."""
        inflight = keys.controller_inflight(lane)
        script_keys = [keys.CMDS_QUEUE, inflight, keys.CONTROLLERS]
        script_args = [self.config.batch_size - 1, BATCH_BYTES, lane]
        wait = ("BLMOVE", keys.CMDS_QUEUE, inflight, "LEFT", "RIGHT", CLAIM_WAIT)
        replies = await scripts.pipeline(connection, [wait, scripts.CLAIM.evalsha(script_keys, script_args),
                                                      ("TIME",)])
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply
        first, rest, time = replies
        return (rest if first is None else [first, *rest]), bus_ms(time)

    async def _route_batch(self, connection: Connection, inflight: str, raws: list[bytes], ticket: int,
                           claimed_at: float, now_ms: int) -> None:
        """Decide a batch, then commit it when every batch claimed before it is committed."""
        try:
            batch = await self._decide_batch(raws, now_ms)
        except BaseException:
            self.sequencer.skip(ticket)
            raise
        async with self.sequencer.committing(ticket):
            committed = await batch.commit(connection, self.config, inflight, len(raws))
        if committed:
            self.routed += batch.routed
            self.dead_letters += batch.dead
            self.answers.update(batch.answered)
            self.latency.observe(trio.current_time() - claimed_at, len(raws))
        else:
            log.warning("a batch of %d commands was taken over by another controller; it routes them", len(raws))

    async def _decide_batch(self, raws: list[bytes], now_ms: int) -> Batch:
        batch, router = Batch(), Router(self.registry)
        unroutable: list[Unroutable] = []
        for raw in raws:
            with _answering_bugs(raw, batch):
                await self._decide(raw, batch, router, unroutable, now_ms)
        if unroutable:
            # Our view may lag behind (an agent that has just come back, a registration drained by a
            # peer): look again before saying no. A command that found no one at all reads every
            # registration again; one that found dead targets only asks about those.
            if any(dead is None for _, _, dead in unroutable):
                await self.registry.revive(self.bus)
            else:
                await self.registry.recheck(self.bus, [view for _, _, dead in unroutable for view in dead or ()])
            router = Router(self.registry)
            for command, raw, _ in unroutable:
                with _answering_bugs(raw, batch):
                    self._send(command, raw, batch, router, now_ms)
        return batch

    async def _decide(self, raw: bytes, batch: Batch, router: Router,
                      unroutable: list[Unroutable], now_ms: int) -> None:
        try:
            command = decode_command(raw, self.config.max_data_bytes)
        except MalformedCommand as exc:
            if exc.command_id is None:
                log.warning("dead letter: %s", exc)
                batch.dead_letter(raw, str(exc))
            else:
                log.warning("command %s refused: %s", exc.command_id, exc)
                batch.answer(exc.command_id, _refusal(exc))
            return
        batch.log(raw)
        expiry = self._expiry(command)
        if command.queued is not None and now_ms - command.queued > expiry * 1000:
            log.warning("command %s (%s) expired: queued %.1f s ago", command.id, command.cmd,
                        (now_ms - command.queued) / 1000)
            batch.answer(command, _error(command, f"expired: not routed within {expiry:g} s"))
            return
        if command.cmd == CONTROLLER_CMD:
            answer = await self.builtins(command, batch)
            log.debug("controller command %s (%s): %s", command.id, command.args.name, answer.state)
            batch.answer(command, answer)
            return
        if (command.fanout or command.targets) and not router.registrations_checked:
            # A fanout (or a list of targets) answers for every agent, also one whose registration a peer drained
            # a moment ago: new ones come in not alive, and the second look below finds them beating.
            await self.registry.catch_up(self.bus)
            router.registrations_checked = True
        self._send(command, raw, batch, router, now_ms, unroutable)

    def _expiry(self, command: Command) -> float:
        """Seconds after it was queued that a command is no longer routed: ``route_ttl``, or its ``ttl``."""
        return min(self.config.route_ttl, command.ttl) if command.ttl is not None else self.config.route_ttl

    def _send(self, command: Command, raw: bytes, batch: Batch, router: Router, now_ms: int,
              unroutable: list[Unroutable] | None = None) -> None:
        """Send to the chosen agents, and answer for the targets that are not alive; with no match, answer
        why. Given ``unroutable``, a command that found no live agent, or a dead target, is kept there for
        a second look instead."""
        try:
            decision = router.route(command)
        except NoRoute as exc:
            if unroutable is not None:
                unroutable.append((command, raw, None))
                return
            log.debug("command %s (%s) refused: %s", command.id, command.cmd, exc)
            batch.answer(command, _error(command, str(exc)))
            return
        if decision.dead and unroutable is not None:
            for view in decision.send:
                self.registry.set_load(view, view.load - 1)  # decided again after the second look
            views = [self.registry.get(gid, nid) for gid, nid in decision.dead]
            known = [view for view in views if view is not None]
            unroutable.append((command, raw, known))
            return
        for gid, nid in decision.dead:
            batch.answer(command, _error(command, f"agent {gid}:{nid} is not alive", gid, nid))
        if command.rollout is not None:
            start_rollout(command, raw, decision, batch, now_ms)
            return
        grant = _tunnel_grant(command)
        for view in decision.send:
            batch.send(command, raw, view.keys)
            if grant is not None:
                batch.grant_tunnel(view.keys, grant)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("command %s (%s) goes to %s", command.id, command.cmd,
                      ", ".join(view.name for view in decision.send))


@contextlib.contextmanager
def _answering_bugs(raw: bytes, batch: Batch) -> Iterator[None]:
    """A bug met while deciding one command answers that command; it never stops the controller."""
    try:
        yield
    except ConnectionLost:
        raise
    except Exception as exc:
        log.exception("internal error while routing a command")
        reason = f"internal error in the controller: {exc!r}"
        command_id = _id_of(raw)
        if command_id is None:
            batch.dead_letter(raw, reason)
        else:
            batch.answer(command_id, error_job(command_id, reason))


def _error(command: Command, reason: str, gid: int | None = None, nid: int | None = None) -> Job:
    return error_job(command.id, reason, gid=command.gid if gid is None else gid,
                     nid=command.nid if nid is None else nid, cmd=command.cmd, args=command.args.to_wire(),
                     tags=command.tags)


def bus_ms(time: list[bytes]) -> int:
    """Redis ``TIME`` (seconds, microseconds) as epoch milliseconds."""
    return int(time[0]) * 1000 + int(time[1]) // 1000


def _tunnel_grant(command: Command) -> str | None:
    """What a ``hubble_open_tunnel`` from a client lets its agent reach; ``None`` for other commands, or
    for fields the agent will refuse anyway."""
    if command.cmd != tunnels.OPEN_COMMAND:
        return None
    try:
        data = json.loads(command.data) if isinstance(command.data, str) else command.data
        spec = tunnels.TunnelSpec.from_wire(data)
    except (ValueError, TypeError, AttributeError, ProtocolError):
        return None
    return tunnels.grant(spec.gateway, spec.ip, spec.remote)


def _id_of(raw: bytes) -> str | None:
    try:
        return usable_id(json.loads(raw).get("id"))
    except Exception:
        return None


def _refusal(exc: MalformedCommand) -> Job:
    """The ERROR job for a malformed command, echoing what could be read of it."""
    fields = exc.fields

    def text(name: str) -> str | None:
        return fields[name] if isinstance(fields.get(name), str) else None

    def node(name: str) -> int:
        return fields[name] if is_integer(fields.get(name)) else 0

    args = fields.get("args")
    assert exc.command_id is not None, "refusals answer commands that have an id"
    return error_job(exc.command_id, f"malformed command: {exc}", gid=node("gid"), nid=node("nid"),
                     cmd=text("cmd") or "", args=args if isinstance(args, dict) else {}, tags=text("tags"))
