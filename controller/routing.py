"""Routing decisions: which live agents get a command. Pure: no I/O.

| gid | nid | role | fanout | goes to                                         |
|-----|-----|------|--------|-------------------------------------------------|
|  X  |  X  |  -   |   -    | that agent                                      |
|  X  |  -  |  X   |   no   | the least busy live agent of grid X with the role(s) |
|  -  |  -  |  X   |   no   | the least busy live agent anywhere with the role(s)  |
| any |  -  |  X   |  yes   | every live matching agent                       |

A ``Router`` decides one batch: the agents matching a (grid, roles) target
are found once per batch and kept in a heap by load, so picking the least
busy of many agents stays cheap. Each decision counts the job in the
chosen agents' load, so the next command sees it.
"""

import heapq

from controller.registry import AgentView, Registry
from protocol.command import Command


class NoRoute(Exception):
    """No agent can take the command; the message is what the client reads."""


def route(command: Command, registry: Registry) -> list[AgentView]:
    """Decide one command on its own."""
    return Router(registry).route(command)


class Router:
    """Decides the targets of the commands of one batch, counting each decision in the agents' load."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._pools: dict[tuple[int, tuple[str, ...]], list[list]] = {}

    def route(self, command: Command) -> list[AgentView]:
        if command.nid:
            view = self.registry.get(command.gid, command.nid)
            if view is None or not view.alive:
                raise NoRoute(f"agent {command.gid}:{command.nid} is not alive")
            targets = [view]
        elif command.fanout:
            targets = [entry[-1] for entry in sorted(self._pool(command), key=lambda entry: (entry[1], entry[2]))]
        else:
            targets = [self._least_busy(command)]
        for view in targets:
            view.load += 1
        return targets

    def _pool(self, command: Command) -> list[list]:
        """Heap of ``[load, gid, nid, view]`` of the live agents matching the command's target."""
        key = (command.gid, command.roles)
        pool = self._pools.get(key)
        if pool is None:
            pool = [[view.load, view.gid, view.nid, view] for view in self.registry.live()
                    if (not command.gid or view.gid == command.gid) and view.holds(command.roles)]
            heapq.heapify(pool)
            self._pools[key] = pool
        if not pool:
            raise NoRoute(_no_match_reason(command))
        return pool

    def _least_busy(self, command: Command) -> AgentView:
        pool = self._pool(command)
        # Loads only grow while a batch is decided (another target may have counted a job on
        # the same agent), so an entry whose load is current at the top is a true minimum.
        while pool[0][0] != pool[0][-1].load:
            entry = pool[0]
            entry[0] = entry[-1].load
            heapq.heapreplace(pool, entry)
        return pool[0][-1]


def _no_match_reason(command: Command) -> str:
    roles = ", ".join(repr(role) for role in command.roles)
    where = f" in grid {command.gid}" if command.gid else ""
    noun = "role" if len(command.roles) == 1 else "roles"
    return f"no live agent with {noun} {roles}{where}"
