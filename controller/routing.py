"""Routing decisions: which live agents get a command. Pure: no I/O.

| gid | nid | role | fanout | goes to                                         |
|-----|-----|------|--------|-------------------------------------------------|
|  X  |  X  |  -   |   -    | that agent                                      |
|  X  |  -  |  X   |   no   | the least busy live agent of grid X with the role(s) |
|  -  |  -  |  X   |   no   | the least busy live agent anywhere with the role(s)  |
| any |  -  |  X   |  yes   | every live matching agent                       |
"""

from controller.registry import AgentView, Registry
from protocol.command import Command


class NoRoute(Exception):
    """No agent can take the command; the message is what the client reads."""


def route(command: Command, registry: Registry) -> list[AgentView]:
    if command.nid:
        view = registry.get(command.gid, command.nid)
        if view is None or not view.alive:
            raise NoRoute(f"agent {command.gid}:{command.nid} is not alive")
        return [view]
    candidates = [
        view for view in registry.live()
        if (not command.gid or view.gid == command.gid) and view.holds(command.roles)
    ]
    if not candidates:
        raise NoRoute(_no_match_reason(command))
    if command.fanout:
        return sorted(candidates, key=lambda view: (view.gid, view.nid))
    return [min(candidates, key=lambda view: view.load)]


def _no_match_reason(command: Command) -> str:
    roles = ", ".join(repr(role) for role in command.roles)
    where = f" in grid {command.gid}" if command.gid else ""
    noun = "role" if len(command.roles) == 1 else "roles"
    return f"no live agent with {noun} {roles}{where}"
