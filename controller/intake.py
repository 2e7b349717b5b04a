"""Taking commands from ``cmds_queue`` and committing the routing decisions.

The loop claims a batch into this controller's inflight list, decides every
command of it in memory, then commits all decisions with one script call
(``route.lua``) that also empties the inflight list. If the controller dies
anywhere in between, the batch is still in the inflight list, and a peer (or
this controller's successor) puts it back on ``cmds_queue``.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bus import Bus, Connection
from controller import scripts
from controller.config import ControllerConfig
from controller.registry import Registry
from controller.routing import NoRoute, route
from protocol import keys
from protocol.command import Command, MalformedCommand, decode_command
from protocol.job import Job, error_job, now_ms
from protocol.states import State

log = logging.getLogger(__name__)

#: Dead letters kept for inspection (the counter counts them all).
DEAD_LETTERS_KEPT = 1000
#: Bytes of an unanswerable input kept in its dead letter.
DEAD_LETTER_SAMPLE = 1000

#: Answers a ``cmd = "controller"`` command: returns the job to send back.
InternalHandler = Callable[[Command], Awaitable[Job]]


@dataclass
class Batch:
    """The decisions for one batch, as records for ``route.lua``."""

    records: list[Any] = field(default_factory=list)
    routed: int = 0
    answered: int = 0
    dead: int = 0

    def send(self, command: Command, raw: bytes, agent_keys: keys.AgentKeys) -> None:
        queued = Job.for_command(command, agent_keys.gid, agent_keys.nid).to_json()
        self.records += ["Q", command.id, agent_keys.name, agent_keys.commands,
                         keys.running_jobs(agent_keys.gid, agent_keys.nid), raw, queued]
        self.routed += 1

    def answer(self, command_id: str, job: Job) -> None:
        self.records += ["A", command_id, keys.agent_name(job.gid, job.nid), job.to_json()]
        self.answered += 1

    def log(self, raw: bytes) -> None:
        self.records += ["L", raw]

    def dead_letter(self, raw: bytes, reason: str) -> None:
        sample = raw[:DEAD_LETTER_SAMPLE].decode("utf-8", "replace")
        letter = {"reason": reason, "input": sample, "size": len(raw), "time": now_ms()}
        self.records += ["D", json.dumps(letter)]
        self.dead += 1


class Intake:
    def __init__(self, config: ControllerConfig, bus: Bus, registry: Registry, controller_id: str,
                 internal: InternalHandler) -> None:
        self.config = config
        self.bus = bus
        self.registry = registry
        self.inflight = keys.controller_inflight(controller_id)
        self.internal = internal
        self.routed = 0

    async def run(self) -> None:
        await self.bus.serve_dedicated(self._serve)

    async def _serve(self, connection: Connection) -> None:
        """Route forever on a connection of our own (it blocks in ``BLMOVE``)."""
        leftover = await connection.execute("LRANGE", self.inflight, 0, -1)
        if leftover:
            log.info("routing %d commands left over from a lost connection", len(leftover))
            await self._route_batch(connection, leftover)
        while True:
            batch = await scripts.CLAIM.run(connection, [keys.CMDS_QUEUE, self.inflight], [self.config.batch_size])
            if not batch:
                first = await connection.execute("BLMOVE", keys.CMDS_QUEUE, self.inflight, "LEFT", "RIGHT", 0)
                batch = [first]
            await self._route_batch(connection, batch)

    async def _route_batch(self, connection: Connection, raws: list[bytes]) -> None:
        batch = Batch()
        for raw in raws:
            await self._decide(raw, batch)
        args = [len(raws), self.config.result_ttl, self.config.joblog_max, keys.JOB_RESULTS_PREFIX,
                keys.RESULT_QUEUE_PREFIX, keys.DEAD_LETTERS, keys.DEAD_LETTER_COUNT, DEAD_LETTERS_KEPT,
                keys.JOB_CHANNEL_PREFIX, keys.UPDATES_SUFFIX, *batch.records]
        committed = await scripts.ROUTE.run(connection, [self.inflight, keys.JOBLOG], args)
        if not committed:
            log.warning("a batch of %d commands was taken over by another controller; it routes them", len(raws))
            return
        self.routed += batch.routed

    async def _decide(self, raw: bytes, batch: Batch) -> None:
        try:
            command = decode_command(raw, self.config.max_data_bytes)
        except MalformedCommand as exc:
            if exc.command_id is None:
                log.warning("dead letter: %s", exc)
                batch.dead_letter(raw, str(exc))
            else:
                log.warning("command %s refused: %s", exc.command_id, exc)
                batch.answer(exc.command_id, _refusal(exc))
            return
        batch.log(raw)
        if command.cmd == "controller":
            batch.answer(command.id, await self.internal(command))
            return
        try:
            targets = route(command, self.registry)
        except NoRoute as exc:
            batch.answer(command.id, error_job(command.id, str(exc), gid=command.gid, nid=command.nid,
                                               cmd=command.cmd, args=command.args.to_wire(), tags=command.tags))
            return
        for view in targets:
            view.load += 1
            batch.send(command, raw, view.keys)


def _refusal(exc: MalformedCommand) -> Job:
    """The ERROR job for a malformed command, echoing what could be read of it."""
    fields = exc.fields

    def echo(name: str, kind: type, default: Any) -> Any:
        value = fields.get(name)
        return value if isinstance(value, kind) and not isinstance(value, bool) else default

    return error_job(exc.command_id, f"malformed command: {exc}", gid=echo("gid", int, 0), nid=echo("nid", int, 0),
                     cmd=echo("cmd", str, ""), args=echo("args", dict, {}), tags=echo("tags", str, None))


def answer_job(command: Command, data: Any, state: State = State.SUCCESS) -> Job:
    """A final job answered by the controller itself, with a level-20 JSON result."""
    job = Job.for_command(command, command.gid, command.nid, state, data=json.dumps(data))
    job.level = 20
    job.starttime = now_ms()
    return job
