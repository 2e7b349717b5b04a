"""Watching the living: agents that stop beating, controllers that die.

Every ``sweep_interval`` this controller renews its own heartbeat, looks at
the agents' heartbeats that are due to expire, answers the unfinished jobs of
lost agents with ``ERROR``, and puts the unrouted batches of dead controllers
back on ``cmds_queue``. Each heartbeat is read about once in its lifetime
(``Registry.read_heartbeats``): at idle, the controller costs Redis a third
to a half of what the agents' beats do, whatever the size of the fleet. Now and
then it also renews the expiry of the results of jobs that still run, so that
a long job's ``jobresult:<id>`` outlives ``result_ttl``.

When Redis itself (re)started, heartbeat keys are gone until the agents have
reconnected and beaten again: an agent not yet seen beating on this Redis is
judged only once Redis has been up for one heartbeat lifetime plus the
longest reconnect delay. An agent seen beating on it is judged at once.
"Beating" means registering or writing a new heartbeat: a heartbeat key that
Redis restored from its append-only file, as the agent wrote it before the
restart, proves nothing about the agent now.

Each sweep also looks at the bus epoch (``keys.BUS_EPOCH``), a token that
vanishes only with the bus's data. Found missing (Redis restarted without
persistence, or was flushed), it is set again, and for ``ADOPTION_WINDOW``
seconds the agents' ``adopt`` envelopes reopen the jobs they still run.
A Sentinel failover is a partial loss of the same kind (the new master may
lack the last writes): ``on_switch`` sets a new epoch and opens the same
window, on the new master, before this controller does anything else there.
"""

import logging
import uuid

import trio

from acbus.connection import Connection, ConnectionLost, ReplyError
from acbus.link import RECONNECT_CAP, Bus, is_wrong_type
from controller import events, scripts
from controller.config import ControllerConfig
from controller.registry import AgentView, Registry
from protocol import keys
from protocol.job import Job, now_ms
from protocol.states import State

log = logging.getLogger(__name__)

#: Seconds between two readings of the whole registry hash, when its size did not change meanwhile.
SLOW_EVERY = 30.0
#: Running jobs whose result expiry is renewed per round trip.
KEEP_ALIVE_CHUNK = 1000
#: Seconds after the bus lost its data during which agents' jobs are adopted: agents reconnect within
#: a few seconds, and announce what they hold as soon as they find their own keys gone.
ADOPTION_WINDOW = 120.0


def result_ttl_of(raw: bytes, default: int) -> int:
    """An open job's result ttl as its agent's running-jobs hash holds it (0, or unusable: ``default``)."""
    try:
        keep = int(raw)
    except ValueError:
        return default
    return keep if 1 <= keep <= default else default


class Liveness:
    """Sweeps heartbeats: answers the jobs of lost agents, takes over the batches of dead controllers."""

    def __init__(self, config: ControllerConfig, bus: Bus, registry: Registry, lanes: list[str]) -> None:
        self.config = config
        self.bus = bus
        self.registry = registry
        self.lanes = lanes  # the ids this controller claims under (see ``intake.lane_ids``)
        self._generation = 0
        self._bus_started_at = 0.0
        self._master_moved_at = 0.0  # when this controller found a new master (trio's clock), 0: never
        self._run_id = ""
        self._kept_alive_at = 0.0
        self._slow_at = -SLOW_EVERY
        self.agents_lost = 0
        self.jobs_failed = 0  # unfinished jobs of lost agents answered ERROR
        self.data_losses = 0  # times this controller found that the bus had lost its data
        self.failovers = 0  # times the bus's master moved (Sentinel) and this controller checked its books again
        self._epoch: bytes | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._recover_strays)
            while True:
                try:
                    await self.sweep()
                except ConnectionLost as exc:
                    log.warning("liveness sweep interrupted: %s", exc)
                except ReplyError as exc:  # the bus not ready (LOADING), full (OOM), ...
                    self.bus.refused(exc, "the liveness sweep")
                await trio.sleep(self.config.sweep_interval)

    async def sweep(self) -> None:
        """Beat, then look at the heartbeats that are due (``Registry.read_heartbeats``) and act on deaths."""
        await self.beat()
        if self.bus.address.sentinels and self.bus.generation != self._generation:
            await self.check_master(self.bus)  # a failover, maybe while we were not connected
        epoch, registered = await self.bus.pipeline([("GET", keys.BUS_EPOCH), ("HLEN", keys.AGENTS)],
                                                    raise_errors=False)
        if is_wrong_type(epoch):
            # Clients may push to it (they read it): one did while it did not exist. Not a token: none.
            log.error("replaced %s: it held another type than the bus epoch (made so by a client)", keys.BUS_EPOCH)
            await self.bus.execute("DEL", keys.BUS_EPOCH)
            epoch = None
        for reply in (epoch, registered):
            if isinstance(reply, ReplyError):
                raise reply
        await self._check_epoch(epoch)
        now = trio.current_time()
        if now - self._slow_at >= SLOW_EVERY or registered != self.registry.hash_fields:
            self._slow_at = now  # (registrations come as events: this makes up for any missed)
            await self.registry.load_registrations(self.bus)
        if self.bus.generation != self._generation:
            await self._reconnected()
        await self._recover_dead_controllers()
        due = [view for view in self.registry.agents.values() if view.check_at <= now]
        died = await self.registry.read_heartbeats(self.bus, due, now)
        if died:
            await self.bus.pipeline([("HSET", keys.LAST_SEEN, view.name, now_ms()) for view in died])
        for view in died:
            self.agents_lost += 1
            log.warning("agent %s lost: no heartbeat", view.name)
        await events.publish_all(self.bus, events.AGENT_LOST, [{"agent": view.name} for view in died])
        await self._forget_the_long_dead()
        # Agents find a restarted bus, or a new master, only from then on: a promoted replica's uptime is not that.
        bus_up = trio.current_time() - max(self._bus_started_at, self._master_moved_at)
        for view in self.registry.agents.values():
            if not view.alive and view.load and (view.seen_on == self._run_id
                                                 or bus_up >= view.heartbeat_ttl + RECONNECT_CAP):
                await self._fail_jobs(view)
        if trio.current_time() - self._kept_alive_at >= self.config.result_ttl / 3:
            self._kept_alive_at = trio.current_time()
            await self._keep_results_alive()

    async def _reconnected(self) -> None:
        """A new connection: the bus may have restarted (or lost its data) since; look at everything again."""
        self._generation = self.bus.generation
        run_id, uptime = await self._bus_run()
        self._bus_started_at = trio.current_time() - uptime
        restarted = run_id != self._run_id
        self._run_id = self.registry.run_id = run_id
        for view in self.registry.agents.values():
            view.check_at = 0.0
            if restarted:
                view.expires_at = None
        await self.registry.read_loads(self.bus)

    async def _check_epoch(self, epoch: bytes | None) -> None:
        """Notice a bus that lost its data: its epoch token (``epoch``, as just read) is gone (or another
        controller set a new one)."""
        if epoch is not None and epoch == self._epoch:
            return
        if epoch is None:
            fresh = uuid.uuid4().hex.encode()
            epoch = fresh if await self.bus.execute("SET", keys.BUS_EPOCH, fresh, "NX") else \
                await self.bus.execute("GET", keys.BUS_EPOCH)
            # A bus without its token may have lost data just now (a peer may already be up again): agents
            # that still run jobs announce them, and those are taken for a while.
            await self.bus.execute("SET", keys.ADOPTING, "1", "PX", int(ADOPTION_WINDOW * 1000))
        if self._epoch is not None:
            self.data_losses += 1
            log.error("the bus lost its data (Redis restarted without persistence, or was flushed): what it held "
                      "is gone (commands waiting, results not popped, schedules); agents reopen the jobs they "
                      "still run; clients waiting on lost commands are told so. Give Redis an append-only file "
                      "(appendonly yes) to lose nothing (docs/operations.md)")
            await events.publish(self.bus, events.BUS_DATA_LOST, controller=self.lanes[0])
        self._epoch = epoch

    async def on_switch(self, connection: Connection) -> None:
        """The bus has a new master (``Bus.on_switch``): before anything else is done there, our heartbeats (the
        failover may have outlasted them: a client sending now must not hear that no controller is alive), then
        a look at whether the books were written on another master (``check_master``)."""
        ttl_ms = int(self.config.takeover_after * 1000)
        await connection.pipeline([("SET", key, value, "PX", ttl_ms) for key, value in self._beats()])
        await self.check_master(connection)

    async def check_master(self, target: Bus | Connection) -> None:
        """With Sentinel: whether this master is the one the books were written on (``rotate_epoch.lua``). One
        promoted since may lack the last writes made on the old one: a new epoch makes waiting clients check
        that the bus still knows their commands, the adoption window lets agents reopen the jobs they hold, and
        the next sweep reads every registration and load again."""
        info = (await target.execute("INFO", "replication")).decode()
        replid = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                       if line.startswith("master_replid:")), "")
        fresh = (keys.FAILOVER_EPOCH_PREFIX + uuid.uuid4().hex).encode()
        epoch, moved = await scripts.ROTATE_EPOCH.run(target, [keys.BUS_EPOCH, keys.ADOPTING, keys.MASTER_REPLID],
                                                      [replid, fresh, int(ADOPTION_WINDOW * 1000)])
        if epoch is not None:
            self._epoch = epoch  # a peer's new epoch, if it looked first (a lost epoch is _check_epoch's)
        if not moved:
            return
        self._master_moved_at = trio.current_time()  # the liveness grace starts again (``sweep``)
        self.failovers += 1
        self._slow_at = -SLOW_EVERY
        log.warning("the bus has a new master (a failover): the last writes to the old one may be lost; clients "
                    "waiting on commands it lost are told so, agents reopen the jobs they still hold")
        await events.publish(target, events.BUS_FAILOVER, controller=self.lanes[0])

    async def _forget_the_long_dead(self) -> None:
        """Drop the registrations of agents dead longer than ``forget_after`` (their death noted when seen)."""
        dead = [view for view in self.registry.agents.values() if not view.alive]
        if not dead:
            return
        seen = await self.bus.execute("HMGET", keys.LAST_SEEN, *(view.name for view in dead))
        now = now_ms()
        unnoted = [view for view, when in zip(dead, seen, strict=True) if when is None]
        if unnoted:
            await self.bus.pipeline([("HSETNX", keys.LAST_SEEN, view.name, now) for view in unnoted])
        for view, when in zip(dead, seen, strict=True):
            if when is not None and now - int(when) >= self.config.forget_after * 1000:
                await self.registry.forget(self.bus, view)

    async def _bus_run(self) -> tuple[str, float]:
        """Which Redis run this is, and for how many seconds it has been up (``INFO server``)."""
        info = dict(line.split(":", 1) for line in (await self.bus.execute("INFO", "server")).decode().splitlines()
                    if ":" in line)
        return info.get("run_id", "").strip(), float(info.get("uptime_in_seconds", 0))

    async def beat(self) -> None:
        """Renew the heartbeat of each of our lanes (and their entries among the controllers)."""
        await self.bus.set_alive(self._beats(), int(self.config.takeover_after * 1000))
        await self.bus.execute("SADD", keys.CONTROLLERS, *self.lanes)

    def _beats(self) -> list[tuple[str, str]]:
        return [(keys.controller_alive(lane), "1") for lane in self.lanes] + [(keys.CONTROLLER_ALIVE, self.lanes[0])]

    async def release(self) -> None:
        """On a clean stop: hand back the batches we hold and stop beating, so no peer waits for us."""
        await self.bus.execute("DEL", *(keys.controller_alive(lane) for lane in self.lanes))
        for lane in self.lanes:
            moved = await self._recover(lane)
            if moved > 0:
                log.info("put %d unrouted commands back on %s", moved, keys.CMDS_QUEUE)

    async def _fail_jobs(self, view: AgentView) -> None:
        running = keys.running_jobs(view.gid, view.nid)
        ids = await self.bus.execute("HKEYS", running)
        answered = 0
        while ids:
            current = await self.bus.pipeline([("HGET", keys.job_results(i.decode()), view.name) for i in ids])
            pairs: list[str] = []
            for raw_id, raw_job in zip(ids, current, strict=True):
                pairs += [raw_id.decode(), self._lost_job(raw_id.decode(), raw_job, view).to_json()]
            reply = await scripts.FAIL_JOBS.run(
                self.bus, [running, view.keys.commands],
                [view.name, self.config.result_ttl, keys.JOB_RESULTS_PREFIX, keys.RESULT_QUEUE_PREFIX,
                 keys.JOB_CHANNEL_PREFIX, keys.UPDATES_SUFFIX, *pairs])
            answered += reply[0]
            ids = reply[1:]
        self.registry.set_load(view, 0)
        self.jobs_failed += answered
        if answered:
            log.warning("answered %d unfinished jobs of lost agent %s with ERROR", answered, view.name)

    def _lost_job(self, job_id: str, raw_job: bytes | None, view: AgentView) -> Job:
        try:
            job = Job.from_json(raw_job) if raw_job else Job(job_id, view.gid, view.nid, "")
        except (ValueError, TypeError):
            job = Job(job_id, view.gid, view.nid, "")
        job.state = State.ERROR
        job.phase = None
        job.data = f"agent {view.name} lost"
        job.level = 0
        if job.starttime:
            job.time = max(0, now_ms() - job.starttime)
        else:
            job.starttime = now_ms()
        return job

    async def _keep_results_alive(self) -> None:
        """Renew the expiry of ``jobresult:<id>`` and ``cmds_queue_<id>`` of every job still open."""
        ttl = self.config.result_ttl
        for view in list(self.registry.agents.values()):
            cursor: bytes | int = 0
            while True:
                cursor, flat = await self.bus.execute("HSCAN", keys.running_jobs(view.gid, view.nid), cursor,
                                                      "COUNT", KEEP_ALIVE_CHUNK)
                commands = []
                for raw_id, raw_keep in zip(flat[::2], flat[1::2], strict=True):
                    job_id, keep = raw_id.decode(), result_ttl_of(raw_keep, ttl)
                    commands += [("EXPIRE", keys.job_results(job_id), keep),
                                 ("EXPIRE", keys.result_queue(job_id), keep)]
                await self.bus.pipeline(commands)
                if int(cursor) == 0:
                    break

    async def _recover_dead_controllers(self) -> None:
        """Take over the batches of controllers whose heartbeat expired (every claim enters its controller in
        ``CONTROLLERS``, so checking that set finds every batch)."""
        await self._recover_peers({member.decode() for member in await self.bus.execute("SMEMBERS", keys.CONTROLLERS)})

    async def _recover_strays(self) -> None:
        """Once, at start: look for inflight lists of controllers missing from ``CONTROLLERS`` (a safety net
        kept off the sweep: the walk over the key space takes seconds on a large bus)."""
        prefix = keys.controller_inflight("")
        while True:
            try:
                lists = await self.bus.scan(keys.CONTROLLER_INFLIGHT_PATTERN)
                return await self._recover_peers({key[len(prefix):] for key in lists})
            except ConnectionLost as exc:
                log.warning("looking for stray inflight lists interrupted: %s", exc)
            except ReplyError as exc:
                self.bus.refused(exc, "looking for stray inflight lists")
            await trio.sleep(self.config.sweep_interval)

    async def _recover_peers(self, peers: set[str]) -> None:
        peers.difference_update(self.lanes)
        if not peers:
            return
        alive = await self.bus.pipeline([("EXISTS", keys.controller_alive(peer)) for peer in sorted(peers)])
        for peer, beating in zip(sorted(peers), alive, strict=True):
            if beating:
                continue
            moved = await self._recover(peer)
            if moved > 0:
                log.warning("controller %s is gone: put its %d unrouted commands back on %s",
                            peer, moved, keys.CMDS_QUEUE)

    async def _recover(self, controller_id: str) -> int:
        return await scripts.RECOVER.run(
            self.bus, [keys.controller_inflight(controller_id), keys.CMDS_QUEUE, keys.controller_alive(controller_id),
                       keys.CONTROLLERS], [controller_id])
