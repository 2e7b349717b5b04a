"""Watching the living: agents that stop beating, controllers that die.

Every ``sweep_interval`` this controller renews its own heartbeat, reads
every agent's, answers the unfinished jobs of lost agents with ``ERROR``, and
puts the unrouted batches of dead controllers back on ``cmds_queue``.

Right after (re)connecting, agents are given one heartbeat lifetime before
being judged: if Redis itself restarted, their heartbeat keys are gone until
they beat again.
"""

import logging

import trio

from bus import Bus, ConnectionLost
from controller import events, scripts
from controller.config import ControllerConfig
from controller.registry import AgentView, Registry
from protocol import keys
from protocol.job import Job, now_ms
from protocol.states import State

log = logging.getLogger(__name__)

#: How long a controller's heartbeat lives; a peer silent this long is dead.
CONTROLLER_TTL_MS = 5000
#: Agents heartbeat with a TTL of at most this; it is also the grace after reconnecting.
AGENT_TTL_GRACE = 6.0
#: Sweeps between the slower checks (dead controllers, the registry hash).
SLOW_EVERY = 10


class Liveness:
    def __init__(self, config: ControllerConfig, bus: Bus, registry: Registry, controller_id: str) -> None:
        self.config = config
        self.bus = bus
        self.registry = registry
        self.controller_id = controller_id
        self._generation = 0
        self._connected_at = 0.0

    async def run(self) -> None:
        sweeps = 0
        while True:
            try:
                await self.sweep(slow=sweeps % SLOW_EVERY == 0)
            except ConnectionLost as exc:
                log.warning("liveness sweep interrupted: %s", exc)
            sweeps += 1
            await trio.sleep(self.config.sweep_interval)

    async def sweep(self, slow: bool = False) -> None:
        await self.bus.execute("SET", keys.controller_alive(self.controller_id), "1", "PX", CONTROLLER_TTL_MS)
        if self.bus.generation != self._generation:
            self._generation = self.bus.generation
            self._connected_at = trio.current_time()
        if slow:
            await self.registry.load_registrations(self.bus)
            await self._recover_dead_controllers()
        for view in await self.registry.refresh_liveness(self.bus):
            log.warning("agent %s lost: no heartbeat", view.name)
            await events.publish(self.bus, events.AGENT_LOST, agent=view.name)
        if trio.current_time() - self._connected_at < AGENT_TTL_GRACE:
            return
        for view in self.registry.agents.values():
            if not view.alive and view.load:
                await self._fail_jobs(view)

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
        view.load = 0
        if answered:
            log.warning("answered %d unfinished jobs of lost agent %s with ERROR", answered, view.name)

    def _lost_job(self, job_id: str, raw_job: bytes | None, view: AgentView) -> Job:
        try:
            job = Job.from_json(raw_job) if raw_job else Job(job_id, view.gid, view.nid, "")
        except (ValueError, TypeError):
            job = Job(job_id, view.gid, view.nid, "")
        job.state = State.ERROR
        job.data = f"agent {view.name} lost"
        job.level = 0
        if job.starttime:
            job.time = max(0, now_ms() - job.starttime)
        else:
            job.starttime = now_ms()
        return job

    async def _recover_dead_controllers(self) -> None:
        own = keys.controller_inflight(self.controller_id)
        for key in await self.bus.scan(keys.CONTROLLER_INFLIGHT_PATTERN):
            if key == own:
                continue
            peer = key[len(keys.controller_inflight("")):]
            moved = await scripts.RECOVER.run(self.bus, [key, keys.CMDS_QUEUE, keys.controller_alive(peer)], [])
            if moved > 0:
                log.warning("controller %s is gone: put its %d unrouted commands back on %s",
                            peer, moved, keys.CMDS_QUEUE)
