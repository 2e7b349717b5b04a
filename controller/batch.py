"""The decisions for one batch of commands, committed all at once by ``route.lua``.

Deciding happens in memory; nothing is written to Redis until the whole
batch is decided. Then one script call applies every decision and empties
the controller's inflight list, or (a peer took the batch over) applies none.
"""

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from acdaemon.logs import LogBudget
from controller import scripts
from controller.config import ControllerConfig
from protocol import keys
from protocol.command import Command
from protocol.job import Job, now_ms
from protocol.jsontext import compact
from protocol.states import Phase

#: The op codes of ``route.lua``: each record of a batch starts with one (its header says what follows it).
SEND, ANSWER, PLACEHOLDER, ROLLOUT, ROLLOUT_OVER = "Q", "A", "P", "R", "X"
LOG, DEAD_LETTER, GRANT, SCHEDULE, UNSCHEDULE = "L", "D", "G", "S", "U"
#: Values per command sent (``Batch.sends``): its id, its JSON, its placeholder job, its result ttl or "".
SEND_WIDTH = 4

log = logging.getLogger(__name__)
_replaced_log = LogBudget(log)  # keys others made the wrong type, said within a budget per key

#: Dead letters kept for inspection (the counter counts them all).
DEAD_LETTERS_KEPT = 1000
#: Bytes of an unanswerable input kept in its dead letter.
DEAD_LETTER_SAMPLE = 1000


@dataclass
class Batch:
    """Everything decided for one batch of commands, staged for ``route.lua`` (nothing is written before)."""

    sends: defaultdict[keys.AgentKeys, list[Any]] = field(default_factory=lambda: defaultdict(list))
    records: list[Any] = field(default_factory=list)
    routed: int = 0
    answered: Counter[str] = field(default_factory=Counter)  # by state
    dead: int = 0

    def send(self, command: Command, raw: bytes, agent: keys.AgentKeys) -> None:
        """Queue ``raw`` for ``agent``, with a placeholder job in ``jobresult:<id>`` (``RUNNING``, phase ``routed``)."""
        queued = Job.for_command(command, agent.gid, agent.nid, phase=Phase.ROUTED).to_json()
        self.sends[agent] += [command.id, raw, queued, command.result_ttl or ""]
        self.routed += 1

    def answer(self, command: Command | str, job: Job) -> None:
        """Answer ``command`` (or the command of that id, when it could not be read) at once with a final job
        (an error, or a controller command's result)."""
        command_id, keep = (command, "") if isinstance(command, str) else (command.id, command.result_ttl or "")
        self.records += [ANSWER, command_id, keys.agent_name(job.gid, job.nid), job.to_json(), keep]
        self.answered[job.state] += 1

    def hold(self, command: Command, agent: keys.AgentKeys) -> None:
        """Show a rollout target that waits for its wave (``RUNNING``, phase ``pending``), so that every target
        of the command is in ``jobresult:<id>`` from the start."""
        pending = Job.for_command(command, agent.gid, agent.nid, phase=Phase.PENDING).to_json()
        self.records += [PLACEHOLDER, command.id, agent.name, pending, command.result_ttl or ""]

    def rollout(self, command_id: str, record: dict[str, Any], started_ms: int | None = None) -> None:
        """Start (``started_ms``: when) or move on rollout ``command_id``: fields of its record
        (``controller/rollouts.py``)."""
        fields = [item for pair in record.items() for item in pair]
        self.records += [ROLLOUT, command_id, "" if started_ms is None else started_ms, len(record), *fields]

    def end_rollout(self, command_id: str) -> None:
        self.records += [ROLLOUT_OVER, command_id]

    def log(self, raw: bytes) -> None:
        """Record an accepted command in ``joblog``."""
        self.records += [LOG, raw]

    def dead_letter(self, raw: bytes, reason: str) -> None:
        """Keep input that cannot be answered (no usable id), with the reason."""
        sample = raw[:DEAD_LETTER_SAMPLE].decode("utf-8", "replace")
        letter = {"reason": reason, "input": sample, "size": len(raw), "time": now_ms()}
        self.records += [DEAD_LETTER, json.dumps(letter)]
        self.dead += 1

    def grant_tunnel(self, agent: keys.AgentKeys, grant: str) -> None:
        """A client lets ``agent`` open tunnel connections to ``grant`` (see ``controller/tunnels.py``)."""
        self.records += [GRANT, keys.tunnel_grants(agent.gid, agent.nid), grant]

    def add_schedule(self, schedule_id: str, schedule: dict[str, Any], due_ms: int) -> None:
        self.records += [SCHEDULE, schedule_id, compact(schedule), due_ms]

    def remove_schedule(self, schedule_id: str) -> None:
        self.records += [UNSCHEDULE, schedule_id]

    async def commit(self, connection: Any, config: ControllerConfig, inflight: str, size: int) -> bool:
        """Apply every decision, if the inflight list still holds the ``size`` commands decided;
        otherwise (a peer took the batch over) apply none. Returns whether it applied them."""
        return await self._commit(connection, config, inflight, f"L{size}")

    async def commit_wave(self, connection: Any, config: ControllerConfig, command_id: str, wave: int) -> bool:
        """Apply every decision, if rollout ``command_id`` is still at ``wave`` (no peer took this step)."""
        return await self._commit(connection, config, keys.rollout(command_id), f"W{wave}")

    async def _commit(self, connection: Any, config: ControllerConfig, guard_key: str, guard: str) -> bool:
        args: list[Any] = [guard, config.result_ttl, config.joblog_max, keys.JOB_RESULTS_PREFIX,
                           keys.RESULT_QUEUE_PREFIX, keys.DEAD_LETTERS, keys.DEAD_LETTER_COUNT, DEAD_LETTERS_KEPT,
                           keys.SCHEDULES, keys.SCHEDULES_DUE, keys.SCHEDULES_LAST, keys.JOB_CHANNEL_PREFIX,
                           keys.UPDATES_SUFFIX, keys.ROLLOUT_PREFIX, keys.ROLLOUTS]
        for agent, sends in self.sends.items():
            args += [SEND, agent.name, agent.commands, keys.running_jobs(agent.gid, agent.nid),
                     len(sends) // SEND_WIDTH, *sends]
        args += self.records
        reply = await scripts.ROUTE.run(connection, [guard_key, keys.JOBLOG], args)
        if not reply:
            return False
        for raw_key in reply[1:]:
            key = raw_key.decode("utf-8", "replace")
            _replaced_log.log(key, logging.ERROR, "replaced %s: it held another type than the controller writes "
                              "there (made so by a client or an agent that may write it: broken, or hostile)", key)
        return True
