"""Commands the controller answers itself: ``cmd = "controller"``, ``args.name`` says which."""

import logging

from controller.intake import answer_job
from controller.registry import Registry
from protocol.command import Command
from protocol.job import Job, error_job

log = logging.getLogger(__name__)


class Internal:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.handlers = {"list_agents": self.list_agents}

    async def __call__(self, command: Command) -> Job:
        handler = self.handlers.get(command.args.name or "")
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return error_job(command.id, f"unknown controller command {command.args.name!r} (known: {known})",
                             cmd=command.cmd, args=command.args.to_wire(), tags=command.tags)
        return answer_job(command, await handler(command))

    async def list_agents(self, command: Command) -> list[dict]:
        return [
            {"gid": view.gid, "nid": view.nid, "roles": sorted(view.roles), "alive": view.alive,
             "running": view.load, **{key: view.registration.get(key) for key in ("hostname", "version", "pid")}}
            for view in sorted(self.registry.agents.values(), key=lambda view: (view.gid, view.nid))
        ]
