"""controller/intake.py: deciding a batch of commands in memory, into a ``Batch`` (``controller/batch.py``)."""

import json

import pytest
import trio
from fake_bus import FakeBus
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.batch import SEND_WIDTH, Batch
from controller.config import load_config
from controller.intake import Intake
from controller.registry import Registry
from controller.routing import Router
from protocol import keys
from protocol.job import error_job
from protocol.presence import Registration

#: The bus's clock while these batches are decided (epoch ms).
NOW_MS = 1_800_000_000_000


def decide(raws: list[bytes], registry: Registry) -> Batch:
    async def internal(command, batch):
        return error_job(command.id, "no internal commands here")

    bus = FakeBus()  # holding the registrations the registry knows (a fanout compares their count)
    for view in registry.agents.values():
        bus.redis.hset(keys.AGENTS, view.name, json.dumps(view.registration.to_wire()))

    async def run() -> Batch:
        intake = Intake(load_config(None), bus, registry, "test", internal)
        batch, router, unroutable = Batch(), Router(registry), []
        for raw in raws:
            await intake._decide(raw, batch, router, unroutable, NOW_MS)
        for command, raw, _ in unroutable:
            intake._send(command, raw, batch, router, NOW_MS)
        return batch

    return trio.run(run)


@pytest.fixture(scope="module")
def registry():
    registry = Registry()
    registry.register(1, 1, Registration(1, 1, roles=("web",)))
    registry.register(1, 2, Registration(1, 2, roles=("web", "db")))
    return registry


def test_a_batch_groups_sends_per_agent_and_accounts_for_every_command(registry):
    raws = [json.dumps({"id": f"c{i}", "cmd": "ping", "role": "web"}).encode() for i in range(6)]
    raws += [b"not json", json.dumps({"id": "bad", "cmd": 5, "role": "web"}).encode(),
             json.dumps({"id": "far", "cmd": "ping", "role": "gpu"}).encode(),
             json.dumps({"id": "all", "cmd": "ping", "role": "*", "fanout": True}).encode()]
    batch = decide(raws, registry)
    assert (batch.routed, batch.answered.total(), batch.dead) == (8, 2, 1)
    assert batch.answered == {"ERROR": 2}, "answers are counted by state"
    sent = {agent.name: sends[0::SEND_WIDTH] for agent, sends in batch.sends.items()}
    assert sorted(sent["1:1"] + sent["1:2"]) == sorted([f"c{i}" for i in range(6)] + ["all", "all"])
    assert abs(len(sent["1:1"]) - len(sent["1:2"])) <= 1, "least busy spreads the load"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60) | st.builds(
    lambda fields: json.dumps(fields).encode(),
    st.dictionaries(st.sampled_from(["id", "cmd", "gid", "nid", "role", "roles", "fanout", "args", "data"]),
                    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=5)
                    | st.lists(st.text(max_size=3), max_size=2), max_size=9)), max_size=20))
def test_deciding_random_input_always_accounts_for_each_item(registry, raws):
    batch = decide(raws, registry)
    assert batch.routed + batch.answered.total() + batch.dead >= len(raws)
    assert batch.answered.total() + batch.dead <= len(raws)
