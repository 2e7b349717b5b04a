"""What a controller knows of the agents: who is alive, which roles, how busy.

The truth is in Redis (the registry hash, heartbeat keys, running-jobs
hashes); this is a local copy, kept fresh by registration events and the
liveness sweep, so that routing a command needs no round trip.
"""

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from protocol.events import AGENT_FORGOTTEN, encode_event
from protocol.keys import AGENTS, EVENTS, GRANTED_ROLES, LAST_SEEN, AgentKeys, parse_agent_name, running_jobs
from protocol.presence import Registration

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AgentView:
    """One agent as this controller sees it: registered roles (as granted), liveness, load."""

    gid: int
    nid: int
    roles: frozenset[str] = frozenset()
    registration: Registration = field(default_factory=lambda: Registration(0, 0))
    alive: bool = False
    load: int = 0  # unfinished jobs routed to it: as last read from Redis, plus what we routed since
    seen_on: str = ""  # run id of the Redis on which we saw it beat (write a new heartbeat)
    heartbeat: bytes = b""  # the last heartbeat we read (JSON: time, running), kept after it expired
    first_beat: bytes | None = None  # the first heartbeat we read on the current Redis run

    @property
    def name(self) -> str:
        return f"{self.gid}:{self.nid}"

    @property
    def keys(self) -> AgentKeys:
        return AgentKeys(self.gid, self.nid)

    @property
    def heartbeat_ttl(self) -> float:
        """Seconds the agent's heartbeat lives: 3 beats of the interval it registered with."""
        return self.registration.heartbeat_ttl

    def holds(self, roles: tuple[str, ...]) -> bool:
        return all(role == "*" or role in self.roles for role in roles)


class Registry:
    """The agents this controller knows, by ``(gid, nid)``."""

    def __init__(self) -> None:
        self.agents: dict[tuple[int, int], AgentView] = {}
        self.run_id = ""  # the Redis run the liveness sweep last saw (``AgentView.seen_on``)

    def get(self, gid: int, nid: int) -> AgentView | None:
        return self.agents.get((gid, nid))

    def register(self, gid: int, nid: int, registration: Registration, alive: bool = True) -> AgentView:
        """Record a (re)registration: its roles are current from now on. A fresh one (``alive``), just
        drained from the agent's outbox, proves that the agent runs against this Redis."""
        view = self.agents.get((gid, nid)) or AgentView(gid, nid)
        if alive:
            view.seen_on = self.run_id
        view.registration = registration
        view.roles = frozenset(registration.roles)
        view.alive = view.alive or alive
        self.agents[(gid, nid)] = view
        return view

    def set_load(self, gid: int, nid: int, open_jobs: int) -> None:
        """The number of jobs open on an agent, as just read from Redis."""
        view = self.agents.get((gid, nid))
        if view is not None:
            view.load = open_jobs

    def live(self) -> list[AgentView]:
        return [view for view in self.agents.values() if view.alive]

    async def load_registrations(self, bus: Any) -> None:
        """Read the registry hash (at start, and now and then as a safety net), and the roles granted: an agent
        is routed by the roles it registered with that it is (still) granted."""
        flat, granted_flat = await bus.pipeline([("HGETALL", AGENTS), ("HGETALL", GRANTED_ROLES)])
        granted = dict(zip(granted_flat[::2], granted_flat[1::2], strict=True))
        registered = {parse_agent_name(name.decode()) for name in flat[::2] if b":" in name}
        for agent in [agent for agent, view in self.agents.items() if agent not in registered and not view.alive]:
            del self.agents[agent]  # forgotten (by a peer, while we did not listen)
        for index in range(0, len(flat), 2):
            name = flat[index].decode()
            try:
                gid, nid = parse_agent_name(name)
                registration = json.loads(flat[index + 1])
                allowed = json.loads(granted[flat[index]]) if flat[index] in granted else None
            except ValueError:
                log.warning("ignoring an unreadable registration of agent %r", name)
                continue
            if isinstance(registration, dict):
                view = self.register(gid, nid, Registration.from_wire(gid, nid, registration), alive=False)
                if isinstance(allowed, list):
                    view.roles &= frozenset(allowed)

    async def forget(self, bus: Any, view: AgentView) -> None:
        """Drop agent ``view``'s registration, here and on the bus, and tell the peers (``agent_forgotten``)."""
        await bus.pipeline([("HDEL", AGENTS, view.name), ("HDEL", LAST_SEEN, view.name),
                            ("DEL", running_jobs(view.gid, view.nid))])
        self.agents.pop((view.gid, view.nid), None)
        log.warning("forgot agent %s: it had stopped beating", view.name)
        await bus.execute("PUBLISH", EVENTS, encode_event(AGENT_FORGOTTEN, agent=view.name))

    async def revive(self, bus: Any) -> None:
        """Read the registrations again and mark alive every agent that beats again.

        For a command that found no live agent: our view may lag behind (the
        sweep has not run yet, or a peer drained the registration).
        """
        await self.load_registrations(bus)
        await self.recheck(bus, [view for view in self.agents.values() if not view.alive])

    async def recheck(self, bus: Any, views: list[AgentView]) -> None:
        """Mark alive those of ``views`` (dead as we saw them) that beat again."""
        replies = await bus.pipeline([("EXISTS", view.keys.alive) for view in views])
        for view, alive in zip(views, replies, strict=True):
            view.alive = view.alive or bool(alive)

    async def refresh_liveness(self, bus: Any) -> list[AgentView]:
        """Read every heartbeat and load; return the agents that have just died."""
        views = list(self.agents.values())
        if not views:
            return []
        commands: list[tuple[str, ...]] = [("GET", view.keys.alive) for view in views]
        commands += [("HLEN", running_jobs(view.gid, view.nid)) for view in views]
        replies = await bus.pipeline(commands, raise_errors=False)
        died = []
        for view, beat, load in zip(views, replies, replies[len(views):], strict=False):
            if view.alive and beat is None:
                died.append(view)
            view.alive = beat is not None  # a heartbeat key of the wrong type still beats
            view.heartbeat = beat if isinstance(beat, bytes) else view.heartbeat
            view.load = load if isinstance(load, int) else view.load
        return died

