"""What a controller knows of the agents: who is alive, which roles, how busy.

The truth is in Redis (the registry hash, heartbeat keys, running-jobs
hashes); this is a local copy, kept fresh by registration events and the
liveness sweep, so that routing a command needs no round trip.
"""

import heapq
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from protocol.events import AGENT_FORGOTTEN, encode_event
from protocol.keys import AGENTS, EVENTS, GRANTED_ROLES, LAST_SEEN, AgentKeys, parse_agent_name, running_jobs
from protocol.presence import Registration

log = logging.getLogger(__name__)

#: PTTL's answers for a key that is not there, and for one without an expiry (a heartbeat set by hand).
NO_KEY, NO_EXPIRY = -2, -1
#: Seconds between looks at the heartbeat of an agent judged dead (its registering again is noticed at once).
DEAD_RECHECK = 5.0
#: Seconds a heartbeat's expiry must move by to count as renewed (the two readings' round trips differ).
RENEWED = 0.1
#: Seconds after a heartbeat's expiry at which the sweep looks at it again: the later, the fewer looks (a
#: heartbeat renewed meanwhile lives on), and a death is still seen within this plus a sweep (0.5 s) < 1 s.
CHECK_SLACK = 0.3


@dataclass(slots=True)
class AgentView:
    """One agent as this controller sees it: registered roles (as granted), liveness, load."""

    gid: int
    nid: int
    roles: frozenset[str] = frozenset()
    registration: Registration = field(default_factory=lambda: Registration(0, 0))
    alive: bool = False
    load: int = 0  # unfinished jobs routed to it: as last read from Redis, plus what we routed since
    seen_on: str = ""  # run id of the Redis on which we saw it beat (renew its heartbeat, or register)
    heartbeat: bytes = b""  # the last heartbeat we read (JSON: time, running), kept after it expired
    expires_at: float | None = None  # trio time its heartbeat expires, as last read on the current Redis run
    check_at: float = 0.0  # trio time the liveness sweep looks at its heartbeat next
    last_beat: float = 0.0  # epoch seconds of its latest beat we know of (from its heartbeat's expiry)

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


class LoadIndex:
    """The live agents of one (grid, role), the least busy first: a heap of ``(load, gid, nid, version)``.

    Picking costs O(log N), so routing a command by role does not depend on the size of the fleet. An agent
    is put in again when it comes alive or its load drops; an entry whose agent died or was put in again
    since (another version) is skipped; one whose agent got busier since is put back with its current
    load when it reaches the top. So the top, once current, is a true least busy agent."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int, int]] = []
        self._version: dict[tuple[int, int], int] = {}  # the members, with the version of their live entry

    def __len__(self) -> int:
        return len(self._version)

    def put(self, view: AgentView) -> None:
        agent = (view.gid, view.nid)
        version = self._version.get(agent, 0) + 1
        self._version[agent] = version
        heapq.heappush(self._heap, (view.load, view.gid, view.nid, version))
        if len(self._heap) > 4 * len(self._version) + 64:  # mostly stale entries: start afresh
            self._heap = [entry for entry in self._heap if self._version.get(entry[1:3]) == entry[3]]
            heapq.heapify(self._heap)

    def discard(self, view: AgentView) -> None:
        self._version.pop((view.gid, view.nid), None)

    def least(self, agents: dict[tuple[int, int], AgentView]) -> AgentView | None:
        heap = self._heap
        while heap:
            load, gid, nid, version = heap[0]
            if self._version.get((gid, nid)) != version:
                heapq.heappop(heap)
                continue
            view = agents[(gid, nid)]
            if view.load == load:
                return view
            heapq.heapreplace(heap, (view.load, gid, nid, version))
        return None


class Registry:
    """The agents this controller knows, by ``(gid, nid)``, and the live ones by (grid, role), least busy first.

    Liveness and load change through ``set_alive``, ``set_load`` and ``count_job``, which keep the indexes
    current (grid 0 and role ``"*"`` stand for any)."""

    def __init__(self) -> None:
        self.agents: dict[tuple[int, int], AgentView] = {}
        self.run_id = ""  # the Redis run the liveness sweep last saw (``AgentView.seen_on``)
        self.indexes: dict[tuple[int, str], LoadIndex] = {}
        self.hash_fields = 0  # fields of the registry hash, as far as we know: its HLEN tells when to read it again

    def least_busy(self, gid: int, role: str) -> AgentView | None:
        """The least busy live agent of grid ``gid`` (0: any) holding ``role`` (``"*"``: any)."""
        index = self.indexes.get((gid, role))
        return None if index is None else index.least(self.agents)

    def set_alive(self, view: AgentView, alive: bool) -> None:
        if alive != view.alive:
            view.alive = alive
            self._reindex(view)

    def set_load(self, view: AgentView, load: int) -> None:
        """The number of jobs open on an agent, as just read from Redis."""
        dropped = load < view.load
        view.load = load
        if dropped and view.alive:
            self._reindex(view)

    def count_job(self, view: AgentView) -> None:
        """One more job routed to ``view`` (the indexes see it when they next look at it)."""
        view.load += 1

    def _index_keys(self, view: AgentView) -> list[tuple[int, str]]:
        return [(grid, role) for role in ("*", *view.roles) for grid in (0, view.gid)]

    def _reindex(self, view: AgentView, old_roles: frozenset[str] = frozenset()) -> None:
        for key in self._index_keys(view):
            index = self.indexes.setdefault(key, LoadIndex())
            if view.alive:
                index.put(view)
            else:
                index.discard(view)
        for role in old_roles - view.roles:
            for grid in (0, view.gid):
                if (grid, role) in self.indexes:
                    self.indexes[(grid, role)].discard(view)

    def get(self, gid: int, nid: int) -> AgentView | None:
        return self.agents.get((gid, nid))

    def register(self, gid: int, nid: int, registration: Registration, alive: bool = True) -> AgentView:
        """Record a (re)registration: its roles are current from now on. A fresh one (``alive``), just
        drained from the agent's outbox, proves that the agent runs against this Redis."""
        view = self.agents.get((gid, nid))
        if view is None:
            view = AgentView(gid, nid, registration=registration)
            self.hash_fields += 1
        if alive:
            view.seen_on = self.run_id
        old_roles = view.roles
        view.check_at = 0.0  # its heartbeat may live shorter now: look at it in the next sweep
        view.registration = registration
        view.roles = frozenset(registration.roles)
        view.alive = view.alive or alive
        self.agents[(gid, nid)] = view
        self._reindex(view, old_roles)
        return view

    def narrow_roles(self, view: AgentView, allowed: frozenset[str]) -> None:
        """Only the roles ``view`` is granted count."""
        old_roles = view.roles
        view.roles &= allowed
        if view.roles != old_roles:
            self._reindex(view, old_roles)

    def drop(self, view: AgentView) -> None:
        self.set_alive(view, False)
        if self.agents.pop((view.gid, view.nid), None) is not None:
            self.hash_fields -= 1

    def live(self) -> list[AgentView]:
        return [view for view in self.agents.values() if view.alive]

    async def load_registrations(self, bus: Any) -> None:
        """Read the registry hash (at start, and now and then as a safety net), and the roles granted: an agent
        is routed by the roles it registered with that it is (still) granted."""
        flat, granted_flat = await bus.pipeline([("HGETALL", AGENTS), ("HGETALL", GRANTED_ROLES)])
        granted = dict(zip(granted_flat[::2], granted_flat[1::2], strict=True))
        registered = {parse_agent_name(name.decode()) for name in flat[::2] if b":" in name}
        for view in [view for agent, view in self.agents.items() if agent not in registered and not view.alive]:
            self.drop(view)  # forgotten (by a peer, while we did not listen)
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
                    self.narrow_roles(view, frozenset(allowed))
        self.hash_fields = len(flat) // 2

    async def forget(self, bus: Any, view: AgentView) -> None:
        """Drop agent ``view``'s registration, here and on the bus, and tell the peers (``agent_forgotten``)."""
        await bus.pipeline([("HDEL", AGENTS, view.name), ("HDEL", LAST_SEEN, view.name),
                            ("DEL", running_jobs(view.gid, view.nid))])
        self.drop(view)
        log.warning("forgot agent %s: it had stopped beating", view.name)
        await bus.execute("PUBLISH", EVENTS, encode_event(AGENT_FORGOTTEN, agent=view.name))

    async def catch_up(self, bus: Any) -> None:
        """Read the registrations again if the bus holds more or fewer than we know of: a peer drained some and
        its events have not reached us yet. A fanout goes to every agent registered, so it asks first; one
        ``HLEN`` when nothing is missing."""
        if await bus.execute("HLEN", AGENTS) != self.hash_fields:
            await self.load_registrations(bus)

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
            if alive:
                self.set_alive(view, True)

    async def read_heartbeats(self, bus: Any, views: list[AgentView], now: float) -> list[AgentView]:
        """Look at the heartbeats of ``views``; return those that have just died.

        One ``PTTL`` each says whether the heartbeat is there and until when: each agent is looked at again
        when it would expire (a dead one every ``DEAD_RECHECK`` seconds), so the sweep reads each heartbeat
        about once a lifetime, not twice a second, and still sees a death within a sweep of its expiry. The
        load of an agent we count jobs on is read again too (``HLEN``): a peer may have routed to it, or
        collected its results. ``now``: the trio time of the reading."""
        if not views:
            return []
        busy = [view for view in views if view.load]
        replies = await bus.pipeline([("PTTL", view.keys.alive) for view in views]
                                     + [("HLEN", running_jobs(view.gid, view.nid)) for view in busy],
                                     raise_errors=False)
        wall, died = time.time(), []
        for view, ttl_ms in zip(views, replies, strict=False):
            if not isinstance(ttl_ms, int):
                continue  # not read (the bus failed the call): looked at in the next sweep
            if ttl_ms == NO_KEY:
                if view.alive:
                    died.append(view)
                self.set_alive(view, False)
                view.check_at = now + DEAD_RECHECK
                continue
            lives = view.heartbeat_ttl if ttl_ms == NO_EXPIRY else ttl_ms / 1000
            expires_at = now + lives
            if view.expires_at is not None and expires_at > view.expires_at + RENEWED:
                view.seen_on = self.run_id  # renewed since we first read it on this Redis run
            view.expires_at, view.check_at = expires_at, expires_at + CHECK_SLACK
            if ttl_ms != NO_EXPIRY:
                view.last_beat = max(view.last_beat, wall + lives - view.heartbeat_ttl)
            self.set_alive(view, True)
        for view, load in zip(busy, replies[len(views):], strict=True):
            if isinstance(load, int):
                self.set_load(view, load)
        return died

    async def read_loads(self, bus: Any) -> None:
        """Read the number of open jobs of every agent (on a new connection: the bus may have changed since)."""
        views = list(self.agents.values())
        replies = await bus.pipeline([("HLEN", running_jobs(view.gid, view.nid)) for view in views],
                                     raise_errors=False)
        for view, load in zip(views, replies, strict=True):
            if isinstance(load, int):
                self.set_load(view, load)
