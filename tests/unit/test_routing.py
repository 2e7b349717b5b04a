"""controller/routing.py: routing decisions against a registry, in memory and as read from a bus (fakeredis)."""

import json
import re

import pytest
import trio
from fake_bus import FakeBus
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.registry import Registry
from controller.routing import NoRoute, Router, route
from protocol.command import Command
from protocol.keys import AGENTS, GRANTED_ROLES, AgentKeys, running_jobs
from protocol.presence import Registration


def join(registry: Registry, gid: int, nid: int, roles: list[str]):
    """A registration just drained from the agent's outbox: the agent is alive."""
    return registry.register(gid, nid, Registration(gid, nid, roles=tuple(roles)))


@pytest.fixture
def registry():
    registry = Registry()
    join(registry, 1, 1, ["web", "db"])
    join(registry, 1, 2, ["web"])
    join(registry, 2, 1, ["db"])
    registry.set_alive(join(registry, 2, 2, ["db"]), False)
    return registry


def names(decision):
    """The agents a decision sends the command to now."""
    return [view.name for view in decision.send]


def dead(decision):
    """The agents a decision answers at once as not alive."""
    return [f"{gid}:{nid}" for gid, nid in decision.dead]


def test_direct(registry):
    assert names(route(Command("c", "ping", gid=1, nid=2), registry)) == ["1:2"]


@pytest.mark.parametrize(("gid", "nid", "reason"), [(2, 2, "agent 2:2 is not alive"), (1, 7, "agent 1:7 is not alive")])
def test_direct_to_dead_or_unknown_agent(registry, gid, nid, reason):
    with pytest.raises(NoRoute, match=reason):
        route(Command("c", "ping", gid=gid, nid=nid), registry)


def test_role_in_grid_picks_the_least_busy(registry):
    registry.set_load(registry.get(1, 1), 5)
    assert names(route(Command("c", "ping", gid=1, roles=("web",)), registry)) == ["1:2"]
    registry.set_load(registry.get(1, 2), 9)
    assert names(route(Command("c", "ping", gid=1, roles=("web",)), registry)) == ["1:1"]


def test_role_anywhere_skips_dead_agents(registry):
    registry.set_alive(registry.get(1, 1), False)
    assert names(route(Command("c", "ping", roles=("db",)), registry)) == ["2:1"]


def test_all_roles_must_be_held(registry):
    assert names(route(Command("c", "ping", roles=("web", "db")), registry)) == ["1:1"]


def test_fanout_reaches_every_live_match_and_answers_for_the_dead_ones(registry):
    decision = route(Command("c", "ping", roles=("db",), fanout=True), registry)
    assert (names(decision), dead(decision)) == (["1:1", "2:1"], ["2:2"])
    decision = route(Command("c", "ping", roles=("*",), fanout=True), registry)
    assert (names(decision), dead(decision)) == (["1:1", "1:2", "2:1"], ["2:2"])
    decision = route(Command("c", "ping", gid=1, roles=("*",), fanout=True), registry)
    assert (names(decision), dead(decision)) == (["1:1", "1:2"], [])


def test_targets_exclude_and_hosts(registry):
    registry.get(1, 1).registration = Registration(1, 1, ("web", "db"), hostname="web-1")
    registry.get(1, 2).registration = Registration(1, 2, ("web",), hostname="web-2")
    registry.get(2, 1).registration = Registration(2, 1, ("db",), hostname="db-1")
    listed = route(Command("c", "ping", targets=((2, 1), (1, 1), (2, 2), (9, 9)), exclude=((1, 1),)), registry)
    assert (names(listed), dead(listed)) == (["2:1"], ["2:2", "9:9"]), "in the order listed; the unknown answered"
    hosted = route(Command("c", "ping", hosts="web-*", fanout=True), registry)
    assert (names(hosted), dead(hosted)) == (["1:1", "1:2"], [])
    both = route(Command("c", "ping", roles=("web",), hosts="web-*", exclude=((1, 2),), fanout=True), registry)
    assert names(both) == ["1:1"]
    assert names(route(Command("c", "ping", hosts="db-?"), registry)) == ["2:1"]
    with pytest.raises(NoRoute, match=re.escape("no agent with role 'web' and a hostname like 'db-*'")):
        route(Command("c", "ping", roles=("web",), hosts="db-*", fanout=True), registry)
    with pytest.raises(NoRoute, match="every target is excluded"):
        route(Command("c", "ping", targets=((1, 1),), exclude=((1, 1),)), registry)


@pytest.mark.parametrize(("command", "reason"), [
    (Command("c", "ping", roles=("cache",)), "no live agent with role 'cache'"),
    (Command("c", "ping", gid=2, roles=("web",)), "no live agent with role 'web' in grid 2"),
    (Command("c", "ping", gid=3, roles=("*",), fanout=True), "no agent with role '*' in grid 3"),
    (Command("c", "ping", roles=("web", "gpu")), "no live agent with roles 'web', 'gpu'"),
])
def test_no_match_says_which_grid_and_role(registry, command, reason):
    with pytest.raises(NoRoute, match=re.escape(reason)):
        route(command, registry)


def test_reregistration_updates_roles(registry):
    join(registry, 1, 2, ["cache"])
    assert names(route(Command("c", "ping", roles=("cache",)), registry)) == ["1:2"]
    assert names(route(Command("c", "ping", gid=1, roles=("web",), fanout=True), registry)) == ["1:1"]


@settings(max_examples=200, deadline=None)
@given(loads=st.lists(st.integers(0, 5), min_size=6, max_size=6),
       targets=st.lists(st.sampled_from([("web",), ("db",), ("*",), ("web", "db")]), min_size=1, max_size=40))
def test_a_batch_always_picks_a_least_busy_agent(loads, targets):
    registry = Registry()
    roles = [["web"], ["db"], ["web", "db"], ["web"], ["db"], ["web", "db"]]
    for nid, (load, held) in enumerate(zip(loads, roles, strict=True), start=1):
        registry.set_load(join(registry, 1, nid, held), load)
    router = Router(registry)
    for wanted in targets:
        matching = [view for view in registry.live() if view.holds(wanted)]
        least = min(view.load for view in matching)
        [chosen] = router.route(Command("c", "ping", roles=wanted)).send
        assert chosen.holds(wanted) and chosen.load == least + 1


# -- over a registry read from a bus -----------------------------------------------------------


@pytest.fixture
def bus():
    """Agents as a bus holds them: registrations (and the roles granted), heartbeats, running jobs.

    1:1 web+db, 3 jobs; 1:2 web, 1 job; 1:3 web, 2 jobs; 2:1 claimed db+gpu, granted db only, 0 jobs;
    2:2 db, no heartbeat (dead); 1:9 in the hash with no heartbeat either."""
    bus = FakeBus()
    agents = {(1, 1): (["web", "db"], 3), (1, 2): (["web"], 1), (1, 3): (["web"], 2), (2, 1): (["db", "gpu"], 0),
              (2, 2): (["db"], 0), (1, 9): (["web"], 0)}
    for (gid, nid), (roles, running) in agents.items():
        bus.redis.hset(AGENTS, f"{gid}:{nid}", json.dumps({"roles": roles, "heartbeat_interval": 1}))
        if (gid, nid) not in ((2, 2), (1, 9)):
            bus.redis.set(AgentKeys(gid, nid).alive, json.dumps({"time": 1, "running": running}))
        for job in range(running):
            bus.redis.hset(running_jobs(gid, nid), f"job-{gid}-{nid}-{job}", 0)
    bus.redis.hset(GRANTED_ROLES, "2:1", json.dumps(["db"]))
    return bus


def read(bus: FakeBus) -> Registry:
    """A controller's registry as it starts: registrations read, then one liveness sweep."""
    registry = Registry()

    async def load() -> None:
        await registry.load_registrations(bus)
        await registry.read_heartbeats(bus, list(registry.agents.values()), 0.0)
        await registry.read_loads(bus)

    trio.run(load)
    return registry


def test_loads_read_from_the_bus_pick_the_least_busy(bus):
    registry = read(bus)
    assert {view.name: view.load for view in registry.live()} == {"1:1": 3, "1:2": 1, "1:3": 2, "2:1": 0}
    router = Router(registry)
    picks = [names(router.route(Command(f"c{i}", "ping", gid=1, roles=("web",)))) for i in range(5)]
    # 1:2 (1 job), then 1:2 and 1:3 tied at 2 (the lower nid first), then all three at 3
    assert picks == [["1:2"], ["1:2"], ["1:3"], ["1:1"], ["1:2"]]


def test_fanout_over_a_bus_goes_to_every_live_match_in_agent_order(bus):
    registry = read(bus)
    assert names(route(Command("c", "ping", roles=("db",), fanout=True), registry)) == ["1:1", "2:1"]
    assert names(route(Command("c", "ping", roles=("*",), fanout=True), registry)) == ["1:1", "1:2", "1:3", "2:1"]
    assert names(route(Command("c", "ping", gid=1, roles=("web",), fanout=True), registry)) == ["1:1", "1:2", "1:3"]
    assert dead(route(Command("c", "ping", roles=("*",), fanout=True), registry)) == ["1:9", "2:2"]


@pytest.mark.parametrize(("command", "reason"), [
    (Command("c", "ping", gid=2, nid=2), "agent 2:2 is not alive"),  # registered, no heartbeat
    (Command("c", "ping", gid=3, nid=1), "agent 3:1 is not alive"),  # never registered
    (Command("c", "ping", roles=("gpu",)), "no live agent with role 'gpu'"),  # claimed by 2:1, not granted
    (Command("c", "ping", gid=2, roles=("web",)), "no live agent with role 'web' in grid 2"),
    (Command("c", "ping", roles=("web", "gpu"), fanout=True), "no agent with roles 'web', 'gpu'"),
])
def test_no_live_agent_on_the_bus_says_why(bus, command, reason):
    with pytest.raises(NoRoute, match=re.escape(reason)):
        route(command, read(bus))


def test_an_agent_beating_again_is_routed_to_after_revive(bus):
    registry = read(bus)
    with pytest.raises(NoRoute):
        route(Command("c", "ping", gid=2, nid=2), registry)
    bus.redis.set(AgentKeys(2, 2).alive, json.dumps({"time": 2, "running": 0}))
    trio.run(registry.revive, bus)
    assert names(route(Command("c", "ping", gid=2, nid=2), registry)) == ["2:2"]
    assert names(route(Command("c", "ping", gid=2, roles=("db",), fanout=True), registry)) == ["2:1", "2:2"]
