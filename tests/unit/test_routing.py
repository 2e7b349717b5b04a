"""Routing decisions against an in-memory registry."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.registry import Registry
from controller.routing import NoRoute, Router, route
from protocol.command import Command


@pytest.fixture
def registry():
    registry = Registry()
    registry.register(1, 1, {"roles": ["web", "db"]})
    registry.register(1, 2, {"roles": ["web"]})
    registry.register(2, 1, {"roles": ["db"]})
    registry.register(2, 2, {"roles": ["db"]}).alive = False
    return registry


def names(views):
    return [view.name for view in views]


def test_direct(registry):
    assert names(route(Command("c", "ping", gid=1, nid=2), registry)) == ["1:2"]


@pytest.mark.parametrize(("gid", "nid", "reason"), [(2, 2, "agent 2:2 is not alive"), (1, 7, "agent 1:7 is not alive")])
def test_direct_to_dead_or_unknown_agent(registry, gid, nid, reason):
    with pytest.raises(NoRoute, match=reason):
        route(Command("c", "ping", gid=gid, nid=nid), registry)


def test_role_in_grid_picks_the_least_busy(registry):
    registry.get(1, 1).load = 5
    assert names(route(Command("c", "ping", gid=1, roles=("web",)), registry)) == ["1:2"]
    registry.get(1, 2).load = 9
    assert names(route(Command("c", "ping", gid=1, roles=("web",)), registry)) == ["1:1"]


def test_role_anywhere_skips_dead_agents(registry):
    registry.get(1, 1).alive = False
    assert names(route(Command("c", "ping", roles=("db",)), registry)) == ["2:1"]


def test_all_roles_must_be_held(registry):
    assert names(route(Command("c", "ping", roles=("web", "db")), registry)) == ["1:1"]


def test_fanout_reaches_every_live_match(registry):
    assert names(route(Command("c", "ping", roles=("db",), fanout=True), registry)) == ["1:1", "2:1"]
    assert names(route(Command("c", "ping", roles=("*",), fanout=True), registry)) == ["1:1", "1:2", "2:1"]
    assert names(route(Command("c", "ping", gid=1, roles=("*",), fanout=True), registry)) == ["1:1", "1:2"]


@pytest.mark.parametrize(("command", "reason"), [
    (Command("c", "ping", roles=("cache",)), "no live agent with role 'cache'"),
    (Command("c", "ping", gid=2, roles=("web",)), "no live agent with role 'web' in grid 2"),
    (Command("c", "ping", gid=3, roles=("*",), fanout=True), "no live agent with role '*' in grid 3"),
    (Command("c", "ping", roles=("web", "gpu")), "no live agent with roles 'web', 'gpu'"),
])
def test_no_match_says_which_grid_and_role(registry, command, reason):
    with pytest.raises(NoRoute, match=re.escape(reason)):
        route(command, registry)


def test_reregistration_updates_roles(registry):
    registry.register(1, 2, {"roles": ["cache"]})
    assert names(route(Command("c", "ping", roles=("cache",)), registry)) == ["1:2"]
    assert names(route(Command("c", "ping", gid=1, roles=("web",), fanout=True), registry)) == ["1:1"]


@settings(max_examples=200, deadline=None)
@given(loads=st.lists(st.integers(0, 5), min_size=6, max_size=6),
       targets=st.lists(st.sampled_from([("web",), ("db",), ("*",), ("web", "db")]), min_size=1, max_size=40))
def test_a_batch_always_picks_a_least_busy_agent(loads, targets):
    registry = Registry()
    roles = [["web"], ["db"], ["web", "db"], ["web"], ["db"], ["web", "db"]]
    for nid, (load, held) in enumerate(zip(loads, roles, strict=True), start=1):
        registry.register(1, nid, {"roles": held}).load = load
    router = Router(registry)
    for wanted in targets:
        matching = [view for view in registry.live() if view.holds(wanted)]
        least = min(view.load for view in matching)
        [chosen] = router.route(Command("c", "ping", roles=wanted))
        assert chosen.holds(wanted) and chosen.load == least + 1
