"""controller/registry.py: the controller's copy of the agents, read from a bus (fakeredis, ``fake_bus``)."""

import json
import logging

import trio
from fake_bus import FakeBus

from controller.registry import Registry
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


def test_refresh_liveness_reads_heartbeats_and_loads_and_returns_who_just_died():
    bus = FakeBus()
    registry = Registry()
    for nid in (1, 2, 3):
        join(registry, 1, nid, "web")
    join(registry, 1, 4, "web", alive=False)
    registry.get(1, 2).load = 7
    beat(bus, 1, 1, running=2)
    bus.redis.hset(running_jobs(1, 1), mapping={"job-a": 0, "job-b": 0})
    bus.redis.hset(AgentKeys(1, 2).alive, "time", 1)  # a heartbeat key of the wrong type still beats
    bus.redis.set(running_jobs(1, 2), "garbage")  # a running hash of the wrong type: the load stays as it was
    beat(bus, 1, 4)  # 1:3 has no heartbeat: it died; 1:4 beats again
    died = trio.run(registry.refresh_liveness, bus)
    assert [view.name for view in died] == ["1:3"]
    state = {view.name: (view.alive, view.load) for view in registry.agents.values()}
    assert state == {"1:1": (True, 2), "1:2": (True, 7), "1:3": (False, 0), "1:4": (True, 0)}
    assert json.loads(registry.get(1, 1).heartbeat) == {"time": 1, "running": 2}
    assert registry.get(1, 2).heartbeat == b"", "only a heartbeat that could be read is kept"
    assert trio.run(registry.refresh_liveness, bus) == [], "an agent dies once"


def test_an_expired_heartbeat_is_kept_as_last_read():
    bus = FakeBus()
    registry = Registry()
    join(registry, 1, 1, "web")
    beat(bus, 1, 1, running=3)
    trio.run(registry.refresh_liveness, bus)
    bus.redis.delete(AgentKeys(1, 1).alive)
    [died] = trio.run(registry.refresh_liveness, bus)
    assert json.loads(died.heartbeat)["running"] == 3


def test_refresh_liveness_of_no_agents_asks_nothing():
    bus = FakeBus()
    assert trio.run(Registry().refresh_liveness, bus) == []
    assert bus.sent == []


def test_heartbeat_lifetime_is_three_registered_intervals():
    bus = FakeBus()
    odd = [None, 0, -1, True, "2", 7200]
    registered(bus, **{"1:1": {"heartbeat_interval": 0.5}},
               **{f"2:{nid}": {"heartbeat_interval": value} for nid, value in enumerate(odd, start=1)})
    registry = loaded(bus)
    assert registry.get(1, 1).heartbeat_ttl == 1.5
    assert [registry.get(2, nid).heartbeat_ttl for nid in range(1, len(odd) + 1)] == [6.0] * len(odd), \
        "an interval missing or unusable: the default 2 s"
