"""Commands the controller answers itself: ``cmd = "controller"``, ``args.name`` says which.

Each answer is a final job with a level-20 JSON result. A command that
changes something (a schedule) stages the change in the batch, so it happens
in the same atomic step as the answer, or not at all.
"""

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from acbus.link import Bus
from controller.batch import Batch
from controller.config import ControllerConfig
from controller.registry import AgentView, Registry
from controller.rollouts import Rollouts
from controller.scheduler import Schedule, list_schedules, next_tick
from protocol import keys
from protocol.command import Command
from protocol.errors import ProtocolError, shown, type_name
from protocol.job import Job, error_job, now_ms
from protocol.levels import RESULT_JSON
from protocol.presence import Heartbeat
from protocol.states import State
from protocol.targets import parse_agent

log = logging.getLogger(__name__)


class Builtins:
    """Answers the commands addressed to the controller itself (``cmd = "controller"``)."""

    def __init__(self, config: ControllerConfig, bus: Bus, registry: Registry, rollouts: Rollouts) -> None:
        self.config = config
        self.bus = bus
        self.registry = registry
        self.rollouts = rollouts
        self.handlers: dict[str, Callable[[Command, Batch], Awaitable[Any]]] = {
            "list_agents": self.list_agents,
            "forget_agent": self.forget_agent,
            "rollout_stop": self.rollout_stop,
            "scheduler_add": self.scheduler_add,
            "scheduler_list": self.scheduler_list,
            "scheduler_remove": self.scheduler_remove,
        }

    async def __call__(self, command: Command, batch: Batch) -> Job:
        handler = self.handlers.get(command.args.name or "")
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return self._error(command, f"unknown controller command {shown(command.args.name)} (known: {known})")
        try:
            result = await handler(command, batch)
        except ProtocolError as exc:
            return self._error(command, f"{command.args.name}: {exc}")
        job = Job.for_command(command, command.gid, command.nid, State.SUCCESS, data=json.dumps(result))
        job.level = RESULT_JSON
        job.starttime = now_ms()
        return job

    async def list_agents(self, command: Command, batch: Batch) -> list[dict]:
        """``data`` (optional): ``{"role": <role>, "alive": true|false}`` to list only those agents."""
        request = _request(command.data, {"role", "alive"})
        role, alive = request.get("role"), request.get("alive")
        if role is not None and not isinstance(role, str):
            raise ProtocolError("data.role", f"expected a role (a string), got {type_name(role)}")
        if alive is not None and not isinstance(alive, bool):
            raise ProtocolError("data.alive", f"expected true or false, got {type_name(alive)}")
        views = sorted((view for view in self.registry.agents.values()
                        if (role is None or view.holds((role,))) and (alive is None or view.alive == alive)),
                       key=lambda view: (view.gid, view.nid))
        beats = await self.bus.pipeline([("GET", view.keys.alive) for view in views], raise_errors=False)
        for view, beat in zip(views, beats, strict=True):
            if isinstance(beat, bytes):
                view.heartbeat = beat
        now = time.time()
        return [agent_health(view, view.heartbeat, now) for view in views]

    async def forget_agent(self, command: Command, batch: Batch) -> dict[str, Any]:
        """``data``: ``{"agent": "<gid>:<nid>"}``: drop the registration of an agent that stopped beating, at once
        (as ``forget_after`` does by itself): no fanout targets it any more, until it registers again."""
        name = _request(command.data, {"agent"}).get("agent")
        gid, nid = parse_agent(name, "data.agent")
        view = self.registry.get(gid, nid)
        if view is None:
            raise ProtocolError("data.agent", f"no agent {gid}:{nid} is known")
        if view.alive:
            raise ProtocolError("data.agent", f"agent {gid}:{nid} is alive: only an agent that stopped beating can "
                                "be forgotten (stop it first)")
        await self.registry.forget(self.bus, view)
        return {"forgotten": view.name}

    async def rollout_stop(self, command: Command, batch: Batch) -> dict[str, Any]:
        """``data``: ``{"id": "<command id>"}``: start no further wave of that rollout; its targets not started are
        answered ``SKIPPED`` at once (the wave running goes on: kill it on the agents)."""
        command_id = _request(command.data, {"id"}).get("id")
        if not isinstance(command_id, str) or not command_id:
            raise ProtocolError("data.id", f"expected a command id (a string), got {type_name(command_id)}")
        skipped = await self.rollouts.stop(command_id)
        if skipped is None:
            raise ProtocolError("data.id", f"no rollout {shown(command_id)} is in progress")
        return {"stopped": command_id, "skipped": skipped}

    async def scheduler_add(self, command: Command, batch: Batch) -> dict[str, Any]:
        """``data``: ``{"cron", "cmd", "id" (default: this command's id)}``; an existing id is replaced."""
        schedule = Schedule.from_request(command.data, command.id, self.config.max_data_bytes)
        due = next_tick(schedule.cron, now_ms())
        batch.add_schedule(schedule.id, schedule.to_wire(), due)
        return {**schedule.to_wire(), "next": due}

    async def scheduler_list(self, command: Command, batch: Batch) -> list[dict[str, Any]]:
        return await list_schedules(self.bus)

    async def scheduler_remove(self, command: Command, batch: Batch) -> dict[str, Any]:
        """``data``: ``{"id"}`` (or the id as a plain string)."""
        schedule_id = _schedule_id(command.data)
        if not await self.bus.execute("HEXISTS", keys.SCHEDULES, schedule_id):
            raise ProtocolError("data.id", f"no schedule {shown(schedule_id)}")
        batch.remove_schedule(schedule_id)
        return {"id": schedule_id}

    @staticmethod
    def _error(command: Command, reason: str) -> Job:
        return error_job(command.id, reason, gid=command.gid, nid=command.nid, cmd=command.cmd,
                         args=command.args.to_wire(), tags=command.tags)


def agent_health(view: AgentView, heartbeat: bytes, now: float) -> dict[str, Any]:
    """What ``list_agents`` says of one agent (see docs/controller.md); ``heartbeat``: its latest one known."""
    registration, beat = view.registration, Heartbeat.from_json(heartbeat)
    started = registration.started
    beat_time = beat.time if beat.time is not None or not view.last_beat else round(view.last_beat * 1000)
    return {"gid": view.gid, "nid": view.nid, "roles": sorted(view.roles), "alive": view.alive,
            "running": view.load, "hostname": registration.hostname, "version": registration.version,
            "pid": registration.pid, "metrics": registration.metrics, "started": started,
            "uptime": round(now - started) if view.alive and started is not None else None,
            "last_heartbeat": beat_time, "jobs": beat.running}


def _request(data: str, known: set[str]) -> dict[str, Any]:
    """A controller command's ``data``: a JSON object with only ``known`` keys (empty data: none)."""
    if not data.strip():
        return {}
    try:
        request = json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError("data", "expected a JSON object") from None
    if not isinstance(request, dict):
        raise ProtocolError("data", f"expected a JSON object, got {type_name(request)}")
    unknown = sorted(set(request) - known)
    if unknown:
        raise ProtocolError(f"data.{unknown[0][:60]}", f"unknown key (known: {', '.join(sorted(known))})")
    return request



def _schedule_id(data: str) -> str:
    try:
        request = json.loads(data)
    except (ValueError, RecursionError):
        request = data
    schedule_id = request.get("id") if isinstance(request, dict) else request
    if not isinstance(schedule_id, str) or not schedule_id:
        raise ProtocolError("data.id", f"expected a schedule id (a string), got {type_name(schedule_id)}")
    return schedule_id
