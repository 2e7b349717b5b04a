"""controller/registry.py: the controller's copy of the agents, read from a bus (fakeredis, ``fake_bus``)."""

import json
import logging
import time

import trio
from fake_bus import FakeBus
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.registry import CHECK_SLACK, DEAD_RECHECK, Registry
from protocol.keys import AGENTS, GRANTED_ROLES, AgentKeys, running_jobs
from protocol.presence import Registration


def registered(bus: FakeBus, **registrations: object) -> None:
    """Put registrations into the registry hash: ``registered(bus, **{"1:1": {...}})``; str values go as they are."""
    bus.redis.hset(AGENTS, mapping={name: value if isinstance(value, str) else json.dumps(value)
                                    for name, value in registrations.items()})


def granted(bus: FakeBus, **grants: object) -> None:
    bus.redis.hset(GRANTED_ROLES, mapping={name: value if isinstance(value, str) else json.dumps(value)
                                           for name, value in grants.items()})


def join(registry: Registry, gid: int, nid: int, *roles: str, alive: bool = True):
    """Register an agent as a drained registration does (``alive``), or as read from the hash."""
    return registry.register(gid, nid, Registration(gid, nid, roles=roles), alive=alive)


def beat(bus: FakeBus, gid: int, nid: int, running: int = 0) -> None:
    bus.redis.set(AgentKeys(gid, nid).alive, json.dumps({"time": 1, "running": running}))


def loaded(bus: FakeBus, registry: Registry | None = None) -> Registry:
    registry = registry or Registry()
    trio.run(registry.load_registrations, bus)
    return registry


def test_registrations_are_read_with_their_roles_and_not_taken_as_alive():
    bus = FakeBus()
    registered(bus, **{"1:1": {"roles": ["web", "db"], "hostname": "a"}, "2:5": {"roles": ["db"]}})
    registry = loaded(bus)
    assert sorted(registry.agents) == [(1, 1), (2, 5)]
    first = registry.get(1, 1)
    assert (first.roles, first.registration.hostname, first.alive) == ({"web", "db"}, "a", False)
    assert registry.get(2, 5).roles == {"db"}
    assert registry.live() == [], "a registration read from the hash proves nothing: the heartbeat does"


def test_granted_roles_narrow_the_registered_ones():
    bus = FakeBus()
    registered(bus, **{"1:1": {"roles": ["web", "db"]}, "1:2": {"roles": ["web", "db"]},
                       "1:3": {"roles": ["web"]}, "1:4": {"roles": ["web"]}, "1:5": {"roles": ["web"]}})
    granted(bus, **{"1:1": ["web"],  # db was claimed, not granted
                    "1:3": ["web", "gpu"],  # a grant adds no role the agent did not register
                    "1:4": [],  # granted nothing
                    "1:5": {"web": True}})  # not a list: no narrowing
    registry = loaded(bus)
    roles = {view.name: set(view.roles) for view in registry.agents.values()}
    assert roles == {"1:1": {"web"}, "1:2": {"web", "db"}, "1:3": {"web"}, "1:4": set(), "1:5": {"web"}}


def test_unreadable_registrations_and_grants_are_skipped_and_named(caplog):
    bus = FakeBus()
    registered(bus, **{"1:1": {"roles": ["web"]}, "nonsense": {"roles": ["web"]}, "1:2": "not json",
                       "1:3": {"roles": ["web"]}, "1:4": ["web"], "1:5": {"roles": "web"},
                       "1:6": {"roles": ["web", 7, None]}})
    granted(bus, **{"1:3": "not json"})
    with caplog.at_level(logging.WARNING, logger="controller.registry"):
        registry = loaded(bus)
    assert sorted(view.name for view in registry.agents.values()) == ["1:1", "1:5", "1:6"]
    assert registry.get(1, 5).roles == frozenset(), "roles that are no list: none"
    assert registry.get(1, 6).roles == {"web"}, "only string roles count"
    warned = sorted(record.getMessage() for record in caplog.records)
    assert warned == [f"ignoring an unreadable registration of agent '{name}'" for name in ("1:2", "1:3", "nonsense")]


def test_reading_again_updates_roles_and_keeps_liveness():
    bus = FakeBus()
    registry = Registry()
    join(registry, 1, 1, "web")  # drained just now: alive
    registered(bus, **{"1:1": {"roles": ["cache"]}})
    loaded(bus, registry)
    view = registry.get(1, 1)
    assert (view.roles, view.alive) == ({"cache"}, True)


def test_revive_reads_registrations_again_and_marks_alive_who_beats():
    bus = FakeBus()
    registry = Registry()
    join(registry, 1, 1, "web", alive=False)
    registered(bus, **{"1:1": {"roles": ["web"]}, "1:2": {"roles": ["web"]}, "2:1": {"roles": ["db"]}})
    beat(bus, 1, 2)  # registered through a peer, and beating
    beat(bus, 1, 1)  # came back
    trio.run(registry.revive, bus)
    assert {view.name: view.alive for view in registry.agents.values()} == {"1:1": True, "1:2": True, "2:1": False}


def test_revive_asks_only_after_the_dead():
    bus = FakeBus()
    registry = Registry()
    join(registry, 1, 1, "web")
    join(registry, 1, 2, "web", alive=False)
    for name in ("1:1", "1:2"):
        bus.redis.hset(AGENTS, name, json.dumps({"roles": ["web"]}))
    trio.run(registry.revive, bus)
    assert bus.sent[-1] == [("EXISTS", AgentKeys(1, 2).alive)]
    assert registry.get(1, 1).alive and not registry.get(1, 2).alive


def look(registry: Registry, bus: FakeBus, now: float = 100.0, views=None):
    """One liveness look at ``views`` (every agent by default) at trio time ``now``: those that just died."""
    views = list(registry.agents.values()) if views is None else views
    return trio.run(registry.read_heartbeats, bus, views, now)


def test_read_heartbeats_returns_who_just_died_and_who_beats_again():
    bus = FakeBus()
    registry = Registry()
    for nid in (1, 2, 3):
        join(registry, 1, nid, "web")
    join(registry, 1, 4, "web", alive=False)
    beat(bus, 1, 1)
    bus.redis.hset(AgentKeys(1, 2).alive, "time", 1)  # a heartbeat key of the wrong type still beats
    beat(bus, 1, 4)  # 1:3 has no heartbeat: it died; 1:4 beats again
    assert [view.name for view in look(registry, bus)] == ["1:3"]
    assert {view.name: view.alive for view in registry.agents.values()} == \
        {"1:1": True, "1:2": True, "1:3": False, "1:4": True}
    assert look(registry, bus) == [], "an agent dies once"


def test_each_heartbeat_is_looked_at_again_when_it_would_expire():
    bus = FakeBus()
    registry = Registry()
    view = join(registry, 1, 1, "web")
    bus.redis.set(view.keys.alive, "{}", px=4000)
    look(registry, bus, now=100.0)
    assert 103.9 < view.expires_at <= 104.0 and view.check_at == view.expires_at + CHECK_SLACK
    assert abs(view.last_beat - (time.time() + 4.0 - view.heartbeat_ttl)) < 1, \
        "the beat is dated from its expiry: 4 s left of a 6 s lifetime is a beat 2 s ago"
    bus.redis.delete(view.keys.alive)
    assert look(registry, bus, now=105.0) == [view]
    assert view.check_at == 105.0 + DEAD_RECHECK, "the dead are looked at now and then"


def test_a_renewed_heartbeat_proves_the_agent_beat_on_this_redis():
    bus = FakeBus()
    registry = Registry()
    registry.run_id = "run-2"
    view = join(registry, 1, 1, "web", alive=False)  # as read from the hash: not seen on this run
    bus.redis.set(view.keys.alive, "{}", px=3000)  # restored from the append-only file, maybe
    look(registry, bus, now=100.0)
    assert view.alive and view.seen_on == "", "a heartbeat read once proves nothing"
    bus.redis.set(view.keys.alive, "{}", px=3000)
    look(registry, bus, now=100.5)
    assert view.seen_on == "run-2"


def test_loads_are_read_again_only_for_agents_with_open_jobs():
    bus = FakeBus()
    registry = Registry()
    idle, busy, odd = join(registry, 1, 1, "web"), join(registry, 1, 2, "web"), join(registry, 1, 3, "web")
    registry.set_load(busy, 7)
    registry.set_load(odd, 4)
    bus.redis.hset(running_jobs(1, 2), mapping={"job-a": 0, "job-b": 0})
    bus.redis.set(running_jobs(1, 3), "garbage")  # a running hash of the wrong type: the load stays as it was
    look(registry, bus)
    assert (idle.load, busy.load, odd.load) == (0, 2, 4)
    assert [command[0] for command in bus.sent[-1]] == ["PTTL", "PTTL", "PTTL", "HLEN", "HLEN"]
    trio.run(registry.read_loads, bus)
    assert bus.sent[-1] == [("HLEN", running_jobs(1, nid)) for nid in (1, 2, 3)]


def test_looking_at_no_agents_asks_nothing():
    bus = FakeBus()
    assert look(Registry(), bus) == []
    assert bus.sent == []


def brute_least_busy(registry: Registry, gid: int, role: str):
    """What ``least_busy`` must find, by looking at every agent."""
    matching = [view for view in registry.live() if (not gid or view.gid == gid) and view.holds((role,))]
    return min(((view.load, view.gid, view.nid) for view in matching), default=None)


operations = st.lists(st.tuples(st.sampled_from(["alive", "dead", "load", "job", "roles", "drop", "grant"]),
                                st.integers(1, 2), st.integers(1, 6), st.integers(0, 6),
                                st.sampled_from([("web",), ("db",), ("web", "db"), ()])), max_size=60)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_least_busy_is_always_a_least_busy_live_agent_holding_the_role(ops):
    registry = Registry()
    for op, gid, nid, number, roles in ops:
        view = registry.get(gid, nid)
        if view is None or op == "roles":
            view = join(registry, gid, nid, *roles, alive=op != "dead")
        elif op == "alive":
            registry.set_alive(view, True)
        elif op == "dead":
            registry.set_alive(view, False)
        elif op == "load":
            registry.set_load(view, number)
        elif op == "job":
            registry.count_job(view)
        elif op == "drop":
            registry.drop(view)
        else:
            registry.narrow_roles(view, frozenset(roles))
        for grid in (0, 1, 2):
            for role in ("*", "web", "db", "gpu"):
                least = registry.least_busy(grid, role)
                expected = brute_least_busy(registry, grid, role)
                assert (None if least is None else (least.load, least.gid, least.nid)) == expected


def test_heartbeat_lifetime_is_three_registered_intervals():
    bus = FakeBus()
    odd = [None, 0, -1, True, "2", 7200]
    registered(bus, **{"1:1": {"heartbeat_interval": 0.5}},
               **{f"2:{nid}": {"heartbeat_interval": value} for nid, value in enumerate(odd, start=1)})
    registry = loaded(bus)
    assert registry.get(1, 1).heartbeat_ttl == 1.5
    assert [registry.get(2, nid).heartbeat_ttl for nid in range(1, len(odd) + 1)] == [6.0] * len(odd), \
        "an interval missing or unusable: the default 2 s"
