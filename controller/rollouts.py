"""Rollouts: a fanout started in waves, stopped once too many targets failed.

A command with ``rollout = {batch, wait, max_errors}`` (``protocol/targets.py``)
is routed like a fanout, but only its first ``batch`` targets are sent at once
(``start_rollout``, inside the batch that routes it). Every other target gets
a placeholder in ``jobresult:<id>`` (``RUNNING``, phase ``pending``), so a
client counts all of them from the start, and the rest of the rollout is
kept in Redis (``keys.rollout(id)``; its id in ``keys.ROLLOUTS``):

``command``   the command, as queued         ``pending``  JSON list of the targets not started, in order
``wave``      the wave running (1, 2, ...)   ``current``  JSON list of the targets of that wave
``size``      targets per wave               ``budget``   failures allowed ("inf": no limit)
``errors``    targets failed so far          ``wait_ms``  pause between the end of a wave and the next
``total``     targets in all                 ``ended_at`` bus ms the current wave was seen over (0: not yet)

Every controller's ``Rollouts`` looks at them each sweep. Once every job of
the current wave has ended, its failures are counted; then, if more than
``max_errors`` targets failed, every target not started is answered
``SKIPPED`` and the rollout is over; otherwise, ``wait`` seconds later, the
next wave is sent (a target that is not alive then is answered ``ERROR`` and
counts as failed). An operator may stop a rollout (``stop``, the controller
command ``rollout_stop``): every target not started is answered ``SKIPPED`` at
once; the wave running goes on (killing it is the agents' ``kill``).

Each step is committed by ``route.lua`` only if the record is still at the
wave it was decided on, so two controllers, or one that died half-way and its
successor, take each step once: no target runs twice, none is forgotten.
"""

import json
import logging
import math
from typing import Any

import trio

from acbus.connection import ConnectionLost, ReplyError
from acbus.link import Bus
from controller.batch import Batch
from controller.config import ControllerConfig
from controller.registry import Registry
from controller.routing import Decision
from protocol import keys
from protocol.command import Command, MalformedCommand, decode_command
from protocol.job import error_job
from protocol.states import FINAL_STATES, State

log = logging.getLogger(__name__)


def start_rollout(command: Command, raw: bytes, decision: Decision, batch: Batch, now_ms: int) -> None:
    """Stage a rollout's start in ``batch``: its first wave sent, a placeholder for every other target, its record.
    The targets ``decision`` found dead are answered already, and count as failed."""
    rollout = command.rollout
    assert rollout is not None
    total = len(decision.send) + len(decision.dead)
    size = rollout.wave_size(total)
    wave, later = decision.send[:size], decision.send[size:]
    for view in wave:
        batch.send(command, raw, view.keys)
    for view in later:
        batch.hold(command, view.keys)
    budget = rollout.error_budget(total)
    batch.rollout(command.id, started_ms=now_ms, record={
        "command": raw, "pending": _names(view.keys.name for view in later), "wave": 1,
        "current": _names(view.keys.name for view in wave), "size": size,
        "budget": "inf" if math.isinf(budget) else int(budget), "errors": len(decision.dead), "total": total,
        "wait_ms": int(rollout.wait * 1000), "ended_at": 0})
    log.info("rollout %s: %d targets in waves of %d, the first one sent (%d not alive)", command.id, total, size,
             len(decision.dead))


class Rollouts:
    """Moves every rollout in progress on, wave by wave (see the module's docstring)."""

    def __init__(self, config: ControllerConfig, bus: Bus, registry: Registry) -> None:
        self.config = config
        self.bus = bus
        self.registry = registry
        self.waves_started = 0
        self.skipped = 0
        self._in_progress = False  # whether the last look found rollouts in progress
        self._results_came = trio.Event()

    def poke(self) -> None:
        """Results came in: a wave may be over. Heeded while rollouts are in progress (a new one is found
        within a sweep), so that a controller without rollouts pays nothing per result."""
        if self._in_progress:
            self._results_came.set()

    async def run(self) -> None:
        while True:
            try:
                await self.advance_all()
            except ConnectionLost as exc:
                log.warning("moving rollouts on interrupted: %s", exc)
            except ReplyError as exc:
                self.bus.refused(exc, "moving rollouts on")
            with trio.move_on_after(self.config.sweep_interval):
                await self._results_came.wait()
            self._results_came = trio.Event()

    async def advance_all(self) -> None:
        ids = await self.bus.execute("ZRANGE", keys.ROLLOUTS, 0, -1)
        self._in_progress = bool(ids)
        if not ids:
            return
        time = await self.bus.execute("TIME")
        now_ms = int(time[0]) * 1000 + int(time[1]) // 1000
        for command_id in ids:
            await self._advance(command_id.decode(), now_ms)

    async def stop(self, command_id: str) -> int | None:
        """Answer every target of rollout ``command_id`` not started yet ``SKIPPED``, and end it; return how many
        that was (``None``: no such rollout in progress). Committed only at the wave it was read at: if a peer
        moved the rollout on meanwhile, read it again."""
        while True:
            record = await self._record(command_id)
            try:
                command, wave, pending = (decode_command(record["command"]), int(record["wave"]),
                                          json.loads(record["pending"]))
            except (KeyError, ValueError, MalformedCommand):
                return None  # none, or unreadable (the next look drops it)
            batch = Batch()
            self._skip(command, pending, "not started: the rollout was stopped (rollout_stop)", batch)
            batch.end_rollout(command_id)
            if await batch.commit_wave(self.bus, self.config, command_id, wave):
                self.skipped += len(pending)
                log.info("rollout %s stopped: %d targets not started answered SKIPPED", command_id, len(pending))
                return len(pending)

    async def _record(self, command_id: str) -> dict[str, bytes]:
        flat = await self.bus.execute("HGETALL", keys.rollout(command_id))
        return {flat[index].decode(): flat[index + 1] for index in range(0, len(flat), 2)}

    def _skip(self, command: Command, names: list[str], reason: str, batch: Batch) -> None:
        for name in names:
            gid, nid = keys.parse_agent_name(name)
            skipped = error_job(command.id, reason, gid=gid, nid=nid, cmd=command.cmd, args=command.args.to_wire(),
                                tags=command.tags)
            skipped.state = State.SKIPPED
            batch.answer(command, skipped)

    async def _advance(self, command_id: str, now_ms: int) -> None:
        record = await self._record(command_id)
        if not record:  # over meanwhile
            await self.bus.execute("ZREM", keys.ROLLOUTS, command_id)
            return
        try:
            command = decode_command(record["command"])
            wave, current, pending = int(record["wave"]), json.loads(record["current"]), json.loads(record["pending"])
            errors, size, total = int(record["errors"]), int(record["size"]), int(record["total"])
            budget = math.inf if record["budget"] == b"inf" else int(record["budget"])
            wait_ms, ended_at = int(record["wait_ms"]), int(record["ended_at"])
        except (KeyError, ValueError, MalformedCommand) as exc:
            log.error("rollout %s: unreadable record (%s); dropped", command_id, exc)
            batch = Batch()
            batch.end_rollout(command_id)
            await batch.commit_wave(self.bus, self.config, command_id, int(record.get("wave", b"0") or 0))
            return
        states = await self._states(command_id, current)
        if any(state not in FINAL_STATES for state in states):
            return  # the wave still runs
        errors += sum(state != State.SUCCESS for state in states)
        ended_at = ended_at or now_ms
        batch = Batch()
        if not pending or errors > budget:
            self._skip(command, pending, f"not started: the rollout stopped after {errors} of {total} targets "
                       f"failed (max_errors {budget:g})", batch)
            batch.end_rollout(command_id)
            if await batch.commit_wave(self.bus, self.config, command_id, wave):
                self.skipped += len(pending)
                log.info("rollout %s over: %d of %d targets failed%s", command_id, errors, total,
                         f", {len(pending)} skipped" if pending else "")
            return
        if now_ms < ended_at + wait_ms:
            if int(record["ended_at"]) == 0:  # note when the wave ended, and its failures
                batch.rollout(command_id, {"ended_at": ended_at, "errors": errors, "current": "[]"})
                await batch.commit_wave(self.bus, self.config, command_id, wave)
            return
        sent = self._next_wave(command, record["command"], pending[:size], batch)
        errors += len(pending[:size]) - len(sent)
        batch.rollout(command_id, {"wave": wave + 1, "current": _names(sent), "pending": _names(pending[size:]),
                                   "errors": errors, "ended_at": 0})
        if await batch.commit_wave(self.bus, self.config, command_id, wave):
            self.waves_started += 1
            log.info("rollout %s: wave %d sent to %d targets (%d failed so far)", command_id, wave + 1, len(sent),
                     errors)

    def _next_wave(self, command: Command, raw: bytes, names: list[str], batch: Batch) -> list[str]:
        """Send the wave to its live targets (answering the others); return the names of those sent to."""
        sent = []
        for name in names:
            gid, nid = keys.parse_agent_name(name)
            view = self.registry.get(gid, nid)
            if view is not None and view.alive:
                batch.send(command, raw, view.keys)
                self.registry.count_job(view)
                sent.append(name)
            else:
                batch.answer(command, error_job(command.id, f"agent {name} is not alive", gid=gid, nid=nid,
                                                   cmd=command.cmd, args=command.args.to_wire(), tags=command.tags))
        return sent

    async def _states(self, command_id: str, names: list[str]) -> list[Any]:
        """The states of the wave's jobs in ``jobresult:<id>`` (``None`` for one not there)."""
        if not names:
            return []
        raws = await self.bus.execute("HMGET", keys.job_results(command_id), *names)
        states = []
        for raw in raws:
            try:
                states.append(json.loads(raw).get("state") if raw else None)
            except (ValueError, AttributeError):
                states.append(None)
        return states


def _names(names: Any) -> str:
    return json.dumps(list(names))
