"""Collecting what agents write to their outboxes.

Agents ring a pub/sub bell after each outbox write. This module listens for
bells and drains the outboxes that rang with ``drain.lua``, which moves each
envelope to the client-facing keys in one atomic step. Bells can be missed
(while this controller is disconnected), so on every (re)connection every
outbox is drained once. A drain the bus refuses (``BUSY``, ``LOADING``) is tried
again after a growing delay: no bell would ring for it again.

A bell is only a hint, and a node may ring it in a loop: the bells of one read
are taken at once, and an outbox found empty twice running rests before it is
drained again (``acbus.link.Pending``), so a flood costs little more than
parsing it.
"""

import collections
import json
import logging
from collections.abc import Awaitable, Callable

import trio

from acbus.connection import Connection
from acbus.link import IDLE_REST_CAP, Bus, Pending, raise_refusal, refusal_kind
from acdaemon.logs import LogBudget
from controller import scripts
from controller.config import ControllerConfig
from controller.registry import Registry
from protocol import keys
from protocol.presence import Registration

log = logging.getLogger(__name__)

#: Envelopes taken from one outbox per script call, and bytes after which it takes no more: each call
#: stays short (a few milliseconds, stamping a few thousand log messages), so no agent holds Redis up.
DRAIN_BATCH = 256
DRAIN_BYTES = 16 * 1024
#: Job ids named in one line about the results dropped from an outbox.
JOBS_SHOWN = 5

#: One agent's (re)registration: (gid, nid, registration, new); ``new`` when the registry had never seen it.
Registered = tuple[int, int, Registration, bool]
#: Called with the registrations of one round of drains (a thousand agents starting at once make one call).
RegistrationHandler = Callable[[list[Registered]], Awaitable[None]]


class Collector:
    """Drains agents' outboxes when they ring (and on every connection, to make up for missed bells)."""

    def __init__(self, config: ControllerConfig, bus: Bus, registry: Registry,
                 on_registrations: RegistrationHandler, on_results: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.bus = bus
        self.registry = registry
        self.on_registrations = on_registrations
        self.on_results = on_results  # called after a round of drains that took results (a rollout's wave may end)
        self._outboxes: Pending[tuple[int, int]] = Pending(self._flooded)  # agents whose outboxes want draining
        self.dropped = 0  # results for jobs not open on their agent
        self.messages_dropped = 0  # log messages for jobs not open on their agent
        self.registrations_refused = 0  # registrations claiming roles not granted
        self.envelopes_discarded = 0  # too big, or beyond an outbox's bound
        self.jobs_adopted = 0  # jobs agents still ran after the bus lost its data, open again
        self.bell_floods = 0  # times an agent rang its bell again and again with nothing in its outbox
        self._agent_log = LogBudget(log)  # what agents wrote that was not taken, said within a budget
        self.results: collections.Counter[str] = collections.Counter()  # results from agents, by state

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.bus.serve_dedicated, self._listen)
            nursery.start_soon(self._outboxes.serve, self.bus, self._drain, "draining outboxes")

    def mark(self, gid: int, nid: int) -> None:
        self._outboxes.mark((gid, nid))

    async def mark_all_outboxes(self) -> None:
        """Find every outbox on the bus (new agents included) and drain it."""
        for key in await self.bus.scan(keys.AGENT_OUTBOX_PATTERN):
            self._mark_key(key)

    async def _listen(self, connection: Connection) -> None:
        await connection.psubscribe(keys.AGENT_BELL_PATTERN)
        await self.mark_all_outboxes()
        while True:
            for channel in {channel for channel, _ in await connection.next_messages()}:
                self._mark_key(channel.decode("utf-8", "replace"))

    def _mark_key(self, key: str) -> None:
        try:
            gid, nid = keys.agent_of(key)
        except ValueError:
            log.warning("ignoring %r: not the key of an agent", key[:200])
            return
        self.mark(gid, nid)

    def _flooded(self, agent: tuple[int, int]) -> None:
        self.bell_floods += 1
        log.warning("agent %d:%d rings its bell again and again with nothing in its outbox (a flood, or a broken "
                    "agent): its outbox is drained at most every %g s until that stops", *agent, IDLE_REST_CAP)

    async def _drain(self, agents: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Drain these agents' outboxes; return those that were empty (``Pending`` paces an agent that rings
        its bell for nothing)."""
        config = self.config
        commands = [
            scripts.DRAIN.evalsha(
                [keys.AgentKeys(gid, nid).outbox, keys.running_jobs(gid, nid), keys.AGENTS,
                 keys.agent_logs(gid, nid), keys.job_stats(gid, nid), keys.GRANTED_ROLES, keys.BUS_EPOCH,
                 keys.ADOPTING],
                [keys.agent_name(gid, nid), config.result_ttl, DRAIN_BATCH, DRAIN_BYTES, keys.JOB_RESULTS_PREFIX,
                 keys.RESULT_QUEUE_PREFIX, config.agent_log_max, keys.JOB_CHANNEL_PREFIX, keys.UPDATES_SUFFIX,
                 keys.MESSAGES_SUFFIX, config.result_queue_max, gid, nid, config.max_envelope_bytes,
                 config.outbox_max],
            )
            for gid, nid in agents
        ]
        replies = await scripts.pipeline(self.bus, commands)
        registered: list[Registered] = []
        empty: list[tuple[int, int]] = []
        for (gid, nid), reply in zip(agents, replies, strict=True):
            if isinstance(reply, Exception):
                if refusal_kind(reply) is None:  # (a refusal is tried again below, after the others)
                    empty.append((gid, nid))  # paced as an empty outbox is: a failure that repeats must not spin
                    self._agent_log.log(((gid, nid), "drain"), logging.ERROR, "draining the outbox of agent %d:%d "
                                        "failed: %s", gid, nid, reply)
                continue
            (taken, left, open_jobs, registration, new_agent, pushed, dropped, messages_dropped, refused, discarded,
             adopted, not_adopted) = reply
            if not taken:
                empty.append((gid, nid))
            view = self.registry.get(gid, nid)
            if view is not None:
                self.registry.set_load(view, open_jobs)
            for index in range(0, len(pushed), 2):
                self.results[pushed[index].decode()] += pushed[index + 1]
            if left:
                self.mark(gid, nid)
            self._count_drops(gid, nid, dropped, messages_dropped, refused, discarded)
            if adopted or not_adopted:
                self.jobs_adopted += adopted
                log.warning("agent %d:%d still runs %d jobs the bus had forgotten (it lost its data): they are open "
                            "again%s", gid, nid, adopted, f"; {not_adopted} others not taken" if not_adopted else "")
            if registration:
                try:
                    details = json.loads(registration)
                except ValueError:
                    log.warning("agent %d:%d sent an unreadable registration", gid, nid)
                    continue
                if not isinstance(details, dict):
                    log.warning("agent %d:%d sent a registration that is not a JSON object", gid, nid)
                    continue
                registered.append((gid, nid, Registration.from_wire(gid, nid, details), bool(new_agent)))
        if any(reply[5] for reply in replies if not isinstance(reply, Exception)):
            self.on_results()
        if registered:
            await self.on_registrations(registered)
        raise_refusal(replies)  # a bell is rung once: an outbox the bus would not drain now is drained later
        return empty

    def _count_drops(self, gid: int, nid: int, dropped: list[bytes], messages_dropped: int, refused: bytes,
                     discarded: int) -> None:
        """Count and say (within the log's budget for that agent) what ``drain.lua`` would not take from agent
        ``gid:nid``'s outbox: one line per drain and kind, never one per envelope."""
        agent, say = (gid, nid), self._agent_log.log
        if dropped:
            self.dropped += len(dropped)
            jobs = sorted({job_id.decode("utf-8", "replace") for job_id in dropped})
            more = f" and {len(jobs) - JOBS_SHOWN} more" if len(jobs) > JOBS_SHOWN else ""
            shown = ", ".join(jobs[:JOBS_SHOWN]) + more
            say((agent, "results"), logging.WARNING, "agent %d:%d sent results for jobs not open on it (never sent "
                "to it, or already answered), dropped (%d): %s", gid, nid, len(dropped), shown)
        if messages_dropped:
            self.messages_dropped += messages_dropped
            say((agent, "messages"), logging.WARNING, "dropped %d log messages from agent %d:%d: not for a job open "
                "on it (another agent's, an answered one, or unreadable)", messages_dropped, gid, nid)
        if refused:
            self.registrations_refused += 1
            say((agent, "roles"), logging.ERROR, "refused the registration of agent %d:%d: it claims roles it was "
                "not granted (%s); grant them with ac-controller acl add-agent %d %d --roles ...", gid, nid,
                refused.decode("utf-8", "replace"), gid, nid)
        if discarded:
            self.envelopes_discarded += discarded
            say((agent, "discarded"), logging.ERROR, "discarded %d envelopes of agent %d:%d: larger than %d bytes, "
                "beyond the %d its outbox may hold, or an outbox it made something else than a list", discarded, gid,
                nid, self.config.max_envelope_bytes, self.config.outbox_max)
