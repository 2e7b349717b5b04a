"""Routing decisions: which agents get a command. Pure: no I/O.

| gid | nid | role / hosts / targets | fanout | goes to                                       |
|-----|-----|------------------------|--------|-----------------------------------------------|
|  X  |  X  |  -                     |   -    | that agent                                    |
|  X  |  -  |  role and/or hosts     |   no   | the least busy live agent of grid X matching  |
|  -  |  -  |  role and/or hosts     |   no   | the least busy live agent anywhere matching   |
| any |  -  |  role and/or hosts     |  yes   | every matching agent the controllers know     |
|  -  |  -  |  targets               |   -    | each agent listed                             |

``exclude`` takes agents out of any of these but the first. A fanout answers
for every target: one that is known but not alive is answered at once
(``Decision.dead``), so no target is skipped in silence.

A ``Router`` decides one batch: the live agents matching a (grid, roles,
hosts) target are found once per batch and kept in a heap by load, so
picking the least busy of many agents stays cheap. Each decision counts the
job in the chosen agents' load, so the next command sees it.
"""

import fnmatch
import heapq
from dataclasses import dataclass, field

from controller.registry import AgentView, Registry
from protocol.command import Command


@dataclass
class Decision:
    """Where a command goes: ``send`` to these agents now; ``dead`` ones it targets are not alive."""

    send: list[AgentView] = field(default_factory=list)
    dead: list[tuple[int, int]] = field(default_factory=list)


class NoRoute(Exception):
    """No agent can take the command; the message is what the client reads."""


def route(command: Command, registry: Registry) -> Decision:
    """Decide one command on its own."""
    return Router(registry).route(command)


class Router:
    """Decides the targets of the commands of one batch, counting each decision in the agents' load."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.registrations_checked = False  # the batch's first fanout or target list read the bus's registrations
        self._pools: dict[tuple[int, tuple[str, ...], str | None, tuple[tuple[int, int], ...]], list[list]] = {}

    def route(self, command: Command) -> Decision:
        if command.nid:
            view = self.registry.get(command.gid, command.nid)
            if view is None or not view.alive:
                raise NoRoute(f"agent {command.gid}:{command.nid} is not alive")
            decision = Decision([view])
        elif command.targets:
            decision = self._listed(command)
        elif command.fanout:
            decision = self._every(command)
        else:
            decision = Decision([self._least_busy(command)])
        for view in decision.send:
            self.registry.count_job(view)
        return decision

    def _listed(self, command: Command) -> Decision:
        decision, excluded = Decision(), set(command.exclude)
        for gid, nid in command.targets:
            if (gid, nid) in excluded:
                continue
            view = self.registry.get(gid, nid)
            if view is not None and view.alive and _host_matches(view, command.hosts):
                decision.send.append(view)
            elif view is None or _host_matches(view, command.hosts):
                decision.dead.append((gid, nid))
        if not decision.send and not decision.dead:
            raise NoRoute("no agent left to run it: every target is excluded or does not match hosts")
        return decision

    def _every(self, command: Command) -> Decision:
        """Every known agent the command selects, in (gid, nid) order; the dead ones answered."""
        decision = Decision()
        for view in sorted(self.registry.agents.values(), key=lambda view: (view.gid, view.nid)):
            if not _selects(command, view):
                continue
            if view.alive:
                decision.send.append(view)
            else:
                decision.dead.append((view.gid, view.nid))
        if not decision.send and not decision.dead:
            raise NoRoute(_no_match_reason(command, live=False))
        return decision

    def _pool(self, command: Command) -> list[list]:
        """Heap of ``[load, gid, nid, view]`` of the live agents matching the command's target."""
        key = (command.gid, command.roles, command.hosts, command.exclude)
        pool = self._pools.get(key)
        if pool is None:
            pool = [[view.load, view.gid, view.nid, view] for view in self.registry.live() if _selects(command, view)]
            heapq.heapify(pool)
            self._pools[key] = pool
        if not pool:
            raise NoRoute(_no_match_reason(command))
        return pool

    def _least_busy(self, command: Command) -> AgentView:
        if command.hosts is None and not command.exclude and len(command.roles) <= 1:
            view = self.registry.least_busy(command.gid, command.roles[0] if command.roles else "*")
            if view is None:
                raise NoRoute(_no_match_reason(command))
            return view
        pool = self._pool(command)
        # Loads only grow while a batch is decided (another target may have counted a job on
        # the same agent), so an entry whose load is current at the top is a true minimum.
        while pool[0][0] != pool[0][-1].load:
            entry = pool[0]
            entry[0] = entry[-1].load
            heapq.heapreplace(pool, entry)
        return pool[0][-1]


def _selects(command: Command, view: AgentView) -> bool:
    return ((not command.gid or view.gid == command.gid) and view.holds(command.roles)
            and _host_matches(view, command.hosts) and (view.gid, view.nid) not in command.exclude)


def _host_matches(view: AgentView, pattern: str | None) -> bool:
    return pattern is None or fnmatch.fnmatchcase(view.registration.hostname or "", pattern)


def _no_match_reason(command: Command, live: bool = True) -> str:
    what = []
    if command.roles:
        noun = "role" if len(command.roles) == 1 else "roles"
        what.append(f"{noun} {', '.join(repr(role) for role in command.roles)}")
    if command.hosts:
        what.append(f"a hostname like {command.hosts!r}")
    where = f" in grid {command.gid}" if command.gid else ""
    left = " (left after exclude)" if command.exclude else ""
    return f"no {'live ' if live else ''}agent with {' and '.join(what)}{where}{left}"
