"""Schedules: commands submitted again at every tick of a cron spec.

A schedule lives in Redis (``SCHEDULES``, with its next tick in
``SCHEDULES_DUE``), so it survives any controller. Every controller watches
for due ticks; ``tick.lua`` lets exactly one of them submit each tick: the
command, with a fresh id, goes onto ``cmds_queue`` and is routed like any
other. A tick missed while no controller ran is submitted once when one
comes back; the next tick is then counted from that moment.

Cron specs have the 5 classic fields (minute hour day-of-month month
day-of-week, names and ranges and steps allowed) and are read in UTC, so
controllers in different time zones agree.
"""

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio
from cronsim import CronSim, CronSimError

from acbus.connection import ConnectionLost, ReplyError
from acbus.link import Bus
from controller import scripts
from protocol import keys
from protocol.command import MAX_ID_LENGTH, MalformedCommand, decode_command
from protocol.errors import ProtocolError, shown, type_name
from protocol.job import now_ms

log = logging.getLogger(__name__)

#: Seconds between looks for due ticks (cron's resolution is a minute).
POLL_INTERVAL = 1.0
#: Due schedules handled per look.
DUE_BATCH = 100
#: How long an unreadable schedule is left alone before it is looked at again.
UNREADABLE_RETRY_MS = 3600 * 1000


def next_tick(cron: str, after_ms: int) -> int:
    """Epoch ms of the first tick of ``cron`` strictly after ``after_ms``."""
    start = datetime.fromtimestamp(after_ms / 1000, UTC)
    return int(next(CronSim(cron, start)).timestamp() * 1000)


def check_cron(value: object) -> str:
    if not isinstance(value, str):
        raise ProtocolError("cron", f"expected a string, got {type_name(value)}")
    if len(value.split()) != 5:
        raise ProtocolError("cron", f"{shown(value)} is not a 5-field cron spec (minute hour day month weekday)")
    try:
        next_tick(value, now_ms())
    except (CronSimError, StopIteration) as exc:
        raise ProtocolError("cron", f"{shown(value)}: {exc or 'never fires'}") from None
    return value


@dataclass(frozen=True, slots=True)
class Schedule:
    """A ``scheduler_add`` request: a cron spec and the command it submits at each tick."""

    id: str
    cron: str
    cmd: dict[str, Any]

    @classmethod
    def from_request(cls, data: str, default_id: str, max_data_bytes: int) -> "Schedule":
        """Read ``scheduler_add``'s data: ``{"cron", "cmd", "id" (optional)}``; raise ``ProtocolError``."""
        try:
            request = json.loads(data)
        except (ValueError, RecursionError):
            raise ProtocolError("data", 'expected JSON {"cron": "<5-field cron spec>", "cmd": {command}}') from None
        if not isinstance(request, dict):
            raise ProtocolError("data", f"expected a JSON object, got {type_name(request)}")
        unknown = sorted(set(request) - {"id", "cron", "cmd"})
        if unknown:
            raise ProtocolError(f"data.{unknown[0]}", "unknown key (known: cmd, cron, id)")
        schedule_id = request.get("id", default_id)
        if not isinstance(schedule_id, str) or not 0 < len(schedule_id) <= MAX_ID_LENGTH:
            raise ProtocolError("data.id", f"expected a string of 1 to {MAX_ID_LENGTH} characters")
        cron = check_cron(request.get("cron"))
        cmd = request.get("cmd")
        if not isinstance(cmd, dict):
            raise ProtocolError("data.cmd", f"expected a command object, got {type_name(cmd)}")
        cmd = {key: value for key, value in cmd.items() if key != "id"}
        try:
            decode_command(json.dumps({**cmd, "id": "scheduled"}), max_data_bytes)
        except MalformedCommand as exc:
            raise ProtocolError(f"data.cmd.{exc.field}" if exc.field else "data.cmd", exc.problem) from None
        return cls(schedule_id, cron, cmd)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "cron": self.cron, "cmd": self.cmd}


async def list_schedules(bus: Bus) -> list[dict[str, Any]]:
    """Every schedule with its next tick and the command its last tick submitted."""
    stored, due, last = await bus.pipeline([
        ("HGETALL", keys.SCHEDULES),
        ("ZRANGE", keys.SCHEDULES_DUE, 0, -1, "WITHSCORES"),
        ("HGETALL", keys.SCHEDULES_LAST),
    ])
    next_ticks = {due[i].decode(): int(float(due[i + 1])) for i in range(0, len(due), 2)}
    last_ticks = {last[i].decode(): json.loads(last[i + 1]) for i in range(0, len(last), 2)}
    listed = []
    for i in range(0, len(stored), 2):
        schedule_id = stored[i].decode()
        listed.append({**json.loads(stored[i + 1]), "next": next_ticks.get(schedule_id),
                       "last": last_ticks.get(schedule_id)})
    return sorted(listed, key=lambda schedule: schedule["id"])


class Scheduler:
    """Submits the due ticks of every schedule; runs in every controller."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.submitted = 0

    async def run(self) -> None:
        while True:
            try:
                await self.submit_due()
            except ConnectionLost as exc:
                log.warning("scheduler interrupted: %s", exc)
            except ReplyError as exc:  # the bus not ready (LOADING), full (OOM), ...
                self.bus.refused(exc, "the scheduler")
            await trio.sleep(POLL_INTERVAL)

    async def submit_due(self) -> None:
        now = now_ms()
        due = await self.bus.execute("ZRANGEBYSCORE", keys.SCHEDULES_DUE, "-inf", now, "WITHSCORES",
                                     "LIMIT", 0, DUE_BATCH)
        for index in range(0, len(due), 2):
            schedule_id, tick = due[index].decode(), due[index + 1]
            stored = await self.bus.execute("HGET", keys.SCHEDULES, schedule_id)
            if stored is None:
                continue
            try:
                schedule = json.loads(stored)
                command = {**schedule["cmd"], "id": str(uuid.uuid4())}
                following = next_tick(schedule["cron"], now)
            except (ValueError, KeyError, TypeError, CronSimError, StopIteration) as exc:
                log.error("schedule %s is unreadable (%r); looking again in an hour", schedule_id, exc)
                await self.bus.execute("ZADD", keys.SCHEDULES_DUE, "XX", now + UNREADABLE_RETRY_MS, schedule_id)
                continue
            last = json.dumps({"id": command["id"], "time": now})
            submitted = await scripts.TICK.run(
                self.bus, [keys.SCHEDULES_DUE, keys.SCHEDULES, keys.CMDS_QUEUE, keys.SCHEDULES_LAST],
                [schedule_id, tick, following, json.dumps(command), last])
            if submitted:
                self.submitted += 1
                log.info("schedule %s: submitted command %s", schedule_id, command["id"])
