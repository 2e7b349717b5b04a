"""controller/scheduler.py: cron specs, schedule requests, and the due ticks read from a bus (fakeredis).

Submitting a tick is ``tick.lua``; fakeredis runs Lua only with the ``lupa`` package, which this venv does not
have: the script call is replaced by a recording stand-in here, and the script itself is tested against a real
redis-server by the integration tests.
"""

import json
import logging
from datetime import UTC, datetime

import pytest
import trio
from fake_bus import FakeBus

from controller import scheduler
from controller.scheduler import UNREADABLE_RETRY_MS, Schedule, Scheduler, check_cron, list_schedules, next_tick
from protocol import keys
from protocol.errors import ProtocolError


def ms(*when: int) -> int:
    return int(datetime(*when, tzinfo=UTC).timestamp() * 1000)


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


# -- schedules on a bus ------------------------------------------------------------------------

NOW = ms(2026, 1, 1, 12, 0, 30)


class RecordedTick:
    """Stands in for ``scripts.TICK`` (Lua): records each call, answers ``submitted``."""

    def __init__(self, submitted: int = 1) -> None:
        self.submitted = submitted
        self.calls: list[tuple[list[str], list]] = []

    async def run(self, connection, keys_, args):
        self.calls.append((list(keys_), list(args)))
        return self.submitted


@pytest.fixture
def tick(monkeypatch):
    monkeypatch.setattr(scheduler, "now_ms", lambda: NOW)
    recorded = RecordedTick()
    monkeypatch.setattr(scheduler.scripts, "TICK", recorded)
    return recorded


def stored(bus: FakeBus, schedule_id: str, due_ms: int | None, value: object) -> None:
    bus.redis.hset(keys.SCHEDULES, schedule_id, value if isinstance(value, str) else json.dumps(value))
    if due_ms is not None:
        bus.redis.zadd(keys.SCHEDULES_DUE, {schedule_id: due_ms})


def due(bus: FakeBus) -> dict[str, int]:
    flat = bus.redis.execute_command("ZRANGE", keys.SCHEDULES_DUE, 0, -1, "WITHSCORES")
    return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def test_list_schedules_joins_each_with_its_next_and_last_tick():
    bus = FakeBus()
    stored(bus, "b-nightly", None, {"id": "b-nightly", "cron": "0 3 * * *", "cmd": {"cmd": "ping", "role": "*"}})
    stored(bus, "a-hourly", ms(2026, 1, 1, 13), {"id": "a-hourly", "cron": "0 * * * *", "cmd": {"cmd": "ping"}})
    bus.redis.hset(keys.SCHEDULES_LAST, "a-hourly", json.dumps({"id": "cmd-7", "time": ms(2026, 1, 1, 12)}))
    assert trio.run(list_schedules, bus) == [
        {"id": "a-hourly", "cron": "0 * * * *", "cmd": {"cmd": "ping"}, "next": ms(2026, 1, 1, 13),
         "last": {"id": "cmd-7", "time": ms(2026, 1, 1, 12)}},
        {"id": "b-nightly", "cron": "0 3 * * *", "cmd": {"cmd": "ping", "role": "*"}, "next": None, "last": None},
    ]
    assert trio.run(list_schedules, FakeBus()) == []


def test_a_due_tick_is_submitted_with_a_fresh_command_and_the_next_tick(tick):
    bus = FakeBus()
    stored(bus, "hourly", ms(2026, 1, 1, 12), {"id": "hourly", "cron": "0 * * * *",
                                               "cmd": {"cmd": "ping", "role": "*"}})
    stored(bus, "later", ms(2026, 1, 1, 12, 1), {"id": "later", "cron": "* * * * *", "cmd": {"cmd": "ping"}})
    ticker = Scheduler(bus)
    trio.run(ticker.submit_due)
    [(script_keys, args)] = tick.calls
    assert script_keys == [keys.SCHEDULES_DUE, keys.SCHEDULES, keys.CMDS_QUEUE, keys.SCHEDULES_LAST]
    schedule_id, tick_read, following, command, last = args
    assert (schedule_id, int(tick_read), following) == ("hourly", ms(2026, 1, 1, 12), ms(2026, 1, 1, 13))
    command, last = json.loads(command), json.loads(last)
    assert command == {"cmd": "ping", "role": "*", "id": command["id"]} and len(command["id"]) == 36
    assert last == {"id": command["id"], "time": NOW}
    assert ticker.submitted == 1
    trio.run(ticker.submit_due)
    assert json.loads(tick.calls[1][1][3])["id"] != command["id"], "each tick submits a command of its own"


def test_a_tick_a_peer_submitted_first_is_not_counted(tick):
    bus = FakeBus()
    stored(bus, "hourly", ms(2026, 1, 1, 12), {"id": "hourly", "cron": "0 * * * *", "cmd": {"cmd": "ping"}})
    tick.submitted = 0  # tick.lua: the tick read is no longer the due one
    ticker = Scheduler(bus)
    trio.run(ticker.submit_due)
    assert (len(tick.calls), ticker.submitted) == (1, 0)


def test_nothing_due_submits_nothing(tick):
    bus = FakeBus()
    stored(bus, "later", NOW + 1, {"id": "later", "cron": "* * * * *", "cmd": {"cmd": "ping"}})
    trio.run(Scheduler(bus).submit_due)
    assert tick.calls == [] and due(bus) == {"later": NOW + 1}


def test_a_due_tick_of_a_removed_schedule_is_left_alone(tick):
    bus = FakeBus()
    bus.redis.zadd(keys.SCHEDULES_DUE, {"gone": NOW - 1})
    trio.run(Scheduler(bus).submit_due)
    assert tick.calls == [] and due(bus) == {"gone": NOW - 1}


@pytest.mark.parametrize("value", ["not json", {"id": "odd", "cmd": {"cmd": "ping"}},
                                   {"id": "odd", "cron": "61 * * * *", "cmd": {"cmd": "ping"}},
                                   {"id": "odd", "cron": "* * * * *"}])
def test_an_unreadable_schedule_is_looked_at_again_in_an_hour(tick, caplog, value):
    bus = FakeBus()
    stored(bus, "odd", NOW - 1, value)
    stored(bus, "fine", NOW, {"id": "fine", "cron": "* * * * *", "cmd": {"cmd": "ping"}})
    with caplog.at_level(logging.ERROR, logger="controller.scheduler"):
        trio.run(Scheduler(bus).submit_due)
    assert due(bus)["odd"] == NOW + UNREADABLE_RETRY_MS
    assert [args[0] for _, args in tick.calls] == ["fine"], "the others are submitted all the same"
    assert "schedule odd is unreadable" in caplog.text
