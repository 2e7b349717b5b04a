"""Controller parts that need no bus: config keys, cron schedules, deciding a batch."""

import json
from datetime import UTC, datetime

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from acdaemon.config import ConfigError
from controller.batch import Batch
from controller.config import event_argv, load_config
from controller.intake import Intake
from controller.registry import Registry
from controller.routing import Router
from controller.scheduler import Schedule, check_cron, next_tick
from controller.sequencer import Sequencer
from protocol.errors import ProtocolError
from protocol.job import error_job


def ms(*when: int) -> int:
    return int(datetime(*when, tzinfo=UTC).timestamp() * 1000)


# -- config ------------------------------------------------------------------------------------


def test_new_controller_keys_have_defaults_and_are_read(tmp_path):
    defaults = load_config(None)
    assert (defaults.takeover_after, defaults.agent_registered, defaults.handler_timeout) == (5.0, "", 30.0)
    path = tmp_path / "controller.toml"
    path.write_text('[routing]\ntakeover_after = 2\n[events]\nagent_returned = "notify {gid}:{nid}"\n')
    config = load_config(path)
    assert config.takeover_after == 2
    assert config.event_handler("agent_returned") == "notify {gid}:{nid}"
    assert config.event_handler("agent_registered") == ""


@pytest.mark.parametrize(("text", "message"), [
    ("[routing]\nbatch_size = 0\n", "[routing] batch_size: must be 1 to 1000, got 0"),
    ("[routing]\nbatch_size = 5000\n", "[routing] batch_size: must be 1 to 1000, got 5000"),
    ("[routing]\ntakeover_after = 0.5\n", "[routing] takeover_after: must be at least twice [agents] sweep_interval"),
    ("[routing]\ntakeover_after = -1\n", "[routing] takeover_after: must be greater than 0"),
    ("[events]\nagent_registered = 'run {host}'\n", "[events] agent_registered: not a usable command line"),
    ("[events]\nagent_returned = 'run \"{gid}'\n", "[events] agent_returned: not a usable command line"),
    ("[events]\nagent_lost = 'x'\n", "[events]: unknown key 'agent_lost'"),
    ("[events]\nagent_registered = '   '\n", "[events] agent_registered: is blank"),
    ("[events]\nhandler_timeout = 0\n", "[events] handler_timeout: must be greater than 0"),
])
def test_broken_new_controller_keys_are_named(tmp_path, text, message):
    path = tmp_path / "controller.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_event_command_lines_are_split_without_a_shell_and_filled():
    argv = event_argv("/opt/hook --node '{gid}:{nid}' \"a b\" $HOME;rm", 3, 14)
    assert argv == ["/opt/hook", "--node", "3:14", "a b", "$HOME;rm"]


# -- cron --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cron", "after", "expected"), [
    ("* * * * *", ms(2026, 1, 1, 12, 0, 30), ms(2026, 1, 1, 12, 1)),
    ("* * * * *", ms(2026, 1, 1, 12, 0), ms(2026, 1, 1, 12, 1)),  # strictly after
    ("*/15 * * * *", ms(2026, 1, 1, 12, 7), ms(2026, 1, 1, 12, 15)),
    ("0 3 * * *", ms(2026, 1, 1, 4, 0), ms(2026, 1, 2, 3, 0)),
    ("30 8 * * mon-fri", ms(2026, 1, 2, 9, 0), ms(2026, 1, 5, 8, 30)),  # Friday 09:00 -> Monday
    ("0 0 1 jan *", ms(2026, 3, 1), ms(2027, 1, 1)),
    ("0 12 13 * fri", ms(2026, 1, 1), ms(2026, 1, 2, 12, 0)),  # day of month OR day of week, as cron does
])
def test_next_tick(cron, after, expected):
    assert next_tick(cron, after) == expected


@pytest.mark.parametrize(("cron", "words"), [
    ("* * * *", "not a 5-field cron spec"),
    ("* * * * * *", "not a 5-field cron spec"),
    ("@daily", "not a 5-field cron spec"),
    ("61 * * * *", "Bad minute"),
    ("* 24 * * *", "Bad hour"),
    ("*/0 * * * *", "Bad minute"),
    ("0 0 31 2 *", "Bad day-of-month"),
    (5, "expected a string, got an integer"),
])
def test_bad_cron_specs_are_refused(cron, words):
    with pytest.raises(ProtocolError) as error:
        check_cron(cron)
    assert error.value.field == "cron" and words in str(error.value)


def test_schedule_request_validates_the_command_and_drops_its_id():
    data = json.dumps({"cron": "0 * * * *", "cmd": {"id": "old", "cmd": "ping", "role": "*"}})
    schedule = Schedule.from_request(data, "default-id", 1024)
    assert schedule.to_wire() == {"id": "default-id", "cron": "0 * * * *", "cmd": {"cmd": "ping", "role": "*"}}
    with pytest.raises(ProtocolError, match=r"data\.cmd\.data: 2000 bytes exceeds the limit of 1024"):
        Schedule.from_request(json.dumps({"cron": "0 * * * *", "cmd": {"cmd": "ping", "role": "*",
                                                                        "data": "x" * 2000}}), "s", 1024)


# -- deciding a batch --------------------------------------------------------------------------


def decide(raws: list[bytes], registry: Registry) -> Batch:
    async def internal(command, batch):
        return error_job(command.id, "no internal commands here")

    async def run() -> Batch:
        intake = Intake(load_config(None), None, registry, "test", internal)
        batch, router, unroutable = Batch(), Router(registry), []
        for raw in raws:
            await intake._decide(raw, batch, router, unroutable)
        for command, raw in unroutable:
            intake._send(command, raw, batch, router)
        return batch

    return trio.run(run)


@pytest.fixture(scope="module")
def registry():
    registry = Registry()
    registry.register(1, 1, {"roles": ["web"]})
    registry.register(1, 2, {"roles": ["web", "db"]})
    return registry


def test_a_batch_groups_sends_per_agent_and_accounts_for_every_command(registry):
    raws = [json.dumps({"id": f"c{i}", "cmd": "ping", "role": "web"}).encode() for i in range(6)]
    raws += [b"not json", json.dumps({"id": "bad", "cmd": 5, "role": "web"}).encode(),
             json.dumps({"id": "far", "cmd": "ping", "role": "gpu"}).encode(),
             json.dumps({"id": "all", "cmd": "ping", "role": "*", "fanout": True}).encode()]
    batch = decide(raws, registry)
    assert (batch.routed, batch.answered.total(), batch.dead) == (8, 2, 1)
    assert batch.answered == {"ERROR": 2}, "answers are counted by state"
    sent = {agent.name: triples[0::3] for agent, triples in batch.sends.items()}
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


# -- lanes in order ----------------------------------------------------------------------------


def test_batches_commit_in_the_order_they_were_claimed_whatever_finishes_deciding_first():
    committed: list[str] = []

    async def lane(sequencer: Sequencer, name: str, deciding: float, claimed: trio.Event | None) -> None:
        if claimed is not None:
            await claimed.wait()
        async with sequencer.claiming() as ticket:
            pass
        if name == "first":
            first_claimed.set()
        await trio.sleep(deciding)
        async with sequencer.committing(ticket):
            committed.append(name)

    async def main() -> None:
        sequencer = Sequencer()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lane, sequencer, "first", 0.05, None)
            nursery.start_soon(lane, sequencer, "second", 0.0, first_claimed)

    first_claimed = trio.Event()
    trio.run(main)
    assert committed == ["first", "second"]


def test_a_skipped_ticket_does_not_hold_up_later_batches():
    async def main() -> list[int]:
        sequencer, committed = Sequencer(), []
        tickets = []
        for _ in range(3):
            async with sequencer.claiming() as ticket:
                tickets.append(ticket)
        sequencer.skip(tickets[0])
        with trio.fail_after(1):
            for ticket in tickets[1:]:
                async with sequencer.committing(ticket):
                    committed.append(ticket)
        return committed

    assert trio.run(main) == [1, 2]
