"""The agent's side of one controller's bus (one ``[controllers.<name>]``).

Every uplink has an outbox. An uplink the agent takes commands from (see
``[channel] cmds``) also heartbeats, registers on every (re)connection, and
runs the intake: commands move from the agent's queue to its inflight list
(``BLMOVE``), so a command the agent holds is never lost, and leave that list
only with their final result (see ``agent/outbox.py``).

A bus that lost writes (its data, or the last moments before a Sentinel
failover) may have lost what the agent did: the commands it took may be back
in its queue, or gone from its inflight list. So each time the intake
connects, it first puts the inflight list right (``reconcile``): every
command the agent holds is in it, and not in its queue. A command whose
routing was lost too may be routed to the agent again: that copy is taken
off the inflight list, unanswered, while the first one still runs. A command
still in the inflight list whose result the failover lost is not run again:
the outbox writes that result again. Nor is one the agent had answered whose
take the bus lost as well (it is back in the agent's queue): that copy is
taken off the inflight list, and the answer written again.
"""

import collections
import logging
from collections.abc import Callable
from functools import partial

import trio

from acbus.connection import Connection
from acbus.link import Bus
from agent.outbox import Outbox
from protocol import envelope
from protocol.command import Command, MalformedCommand, decode_command
from protocol.job import Job, now_ms
from protocol.keys import AgentKeys
from protocol.presence import HEARTBEAT_BEATS, Heartbeat, Registration

log = logging.getLogger(__name__)

#: Commands taken from the queue per round trip once one has arrived.
TAKE_BATCH = 64


class Uplink:
    """The agent's side of one controller's bus: outbox, and (if it takes commands there) heartbeat, registration,
    intake."""

    def __init__(self, name: str, bus: Bus, keys: AgentKeys, *, takes_commands: bool, heartbeat_interval: float,
                 dispatch: Callable[["Uplink", bytes], None], registration: Callable[[], Registration],
                 running: Callable[[], int], describe: Callable[[Command], Job]) -> None:
        self.name = name
        self.bus = bus
        self.keys = keys
        self.takes_commands = takes_commands
        self.heartbeat_interval = heartbeat_interval
        self.dispatch = dispatch
        self.registration = registration
        self.running = running
        self.describe = describe
        self.outbox = Outbox(bus, keys, on_delivered=self._forget, on_data_lost=self._reannounce)
        self._held: collections.Counter[bytes] = collections.Counter()  # raw commands in our inflight list
        self._resent: set[bytes] = set()  # held commands the bus had forgotten: a controller may route them again
        self._answered_before_loss: set[bytes] = set()  # answered lately when the bus lost writes of ours
        self._intake = trio.CancelScope()
        self.results: collections.Counter[str] = collections.Counter()  # results reported, by state
        self.registered = trio.Event()  # a registration of ours reached the bus
        self.taking = trio.Event()  # the intake waits for commands (set once)
        self._intake_live = trio.Event()  # the intake's connection is up now (replaced when it breaks)

    # -- what the agent tells the controller -----------------------------------------

    def hold(self, raw: bytes) -> None:
        """``raw`` is in our inflight list and being answered: do not take it up again."""
        self._held[raw] += 1

    def is_held(self, raw: bytes) -> bool:
        return self._held[raw] > 0

    def report(self, job: Job, *, push: bool, final: bool, command: bytes | None = None,
               reopen: bool = False) -> None:
        """Send a job update; ``command`` (the raw command) leaves the inflight list with it.
        ``reopen`` for a long-running job (see ``protocol.envelope.job_envelope``)."""
        self.outbox.put(envelope.job_envelope(job, push=push, final=final, reopen=reopen), finished_command=command,
                        job=job.id)
        if push:
            self.results[job.state] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job %s (%s): %s%s", job.id, job.cmd, job.state, f" pid {job.pid}" if job.pid else "")

    def drop(self, raw: bytes) -> None:
        """Take an unanswerable command off the inflight list."""
        self.outbox.put_removal(raw)

    def _reannounce(self, everything: bool) -> None:
        """The bus lost writes of ours (``everything``: its data): tell the controllers which jobs we still run,
        ahead of any of their results (the intake puts the inflight list right when it connects again)."""
        # Our take of a command answered lately may be lost too, the command back in our queue: not run again.
        self._answered_before_loss = self.outbox.finished_lately()
        jobs = []
        for raw in self._held:
            try:
                command = decode_command(raw)
            except MalformedCommand:
                continue
            jobs.append(self.describe(command))
        if jobs:
            self.outbox.put_first(envelope.adopt_envelope(jobs))
        what = "its data (Redis restarted without persistence?)" if everything else \
            "our last writes (a failover to a replica that had not received them?)"
        log.error("the bus at %s lost %s: announcing the %d jobs we still hold, so that their results are taken",
                  self.bus.address.url, what, len(jobs))

    async def reconcile(self, connection: Connection) -> list[bytes]:
        """Make our inflight list hold every command we hold (a bus that lost writes may have put one back in
        our queue, or lost it altogether); return the list as it is then. Runs between two outbox writes, after
        the outbox has looked whether the bus lost writes of ours (so that we know it before we take anything:
        the outbox itself looks only when it next writes)."""
        async with self.outbox.lock:
            await self.outbox.check_delivered(connection)
            inflight = await connection.execute("LRANGE", self.keys.inflight, 0, -1)
            missing = list((self._held - collections.Counter(self.outbox.unconfirmed_removals())
                            - collections.Counter(inflight)).elements())
            if not missing:
                return inflight
            replies = await connection.pipeline([("MULTI",), *(("LREM", self.keys.commands, 1, raw) for raw in missing),
                                                 ("RPUSH", self.keys.inflight, *missing), ("EXEC",)])
        removed = replies[-1][:-1]
        self._resent.update(raw for raw, taken in zip(missing, removed, strict=True) if not taken)
        log.warning("the bus at %s had lost %d commands we hold from our inflight list (%d of them were back in our "
                    "queue): put back", self.bus.address.url, len(missing), sum(removed))
        return [*inflight, *missing]

    def _forget(self, raw: bytes) -> None:
        self._held[raw] -= 1
        if self._held[raw] <= 0:
            del self._held[raw]
            self._resent.discard(raw)

    # -- running ---------------------------------------------------------------------------

    async def run(self, leftovers: Callable[["Uplink", list[bytes]], None]) -> None:
        """Deliver the outbox; if commands come from here, also beat, register and take commands.

        ``leftovers`` gets the commands a previous run of the agent took and never finished.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.outbox.run)
            if not self.takes_commands:
                return
            nursery.start_soon(self._heartbeat)
            with self._intake:
                held = await self.bus.keep_trying(partial(self.bus.execute, "LRANGE", self.keys.inflight, 0, -1),
                                                  "reading our inflight list")
                leftovers(self, held)
                await self.bus.serve_dedicated(self._take_commands)

    def stop_intake(self) -> None:
        """Take no more commands (the agent is stopping)."""
        self._intake.cancel()

    async def _take_commands(self, connection: Connection) -> None:
        """Take commands on the intake's own connection; while it is up, and only then, the agent beats."""
        try:
            await self._take_on(connection)
        finally:
            if self._intake_live.is_set():
                self._intake_live = trio.Event()

    async def _take_on(self, connection: Connection) -> None:
        inflight = await self.reconcile(connection)
        answered = self.outbox.finished_lately() if inflight else set()  # a failover lost the answer: written again
        for raw in inflight:
            if not self.is_held(raw) and raw not in answered:
                self.dispatch(self, raw)  # taken just before a lost connection: the reply never came
        self._intake_live.set()
        keys = self.keys
        wait = ("BLMOVE", keys.commands, keys.inflight, "LEFT", "RIGHT", 0)
        take = ("LMOVE", keys.commands, keys.inflight, "LEFT", "RIGHT")
        # Wait for a command and take the one behind it in the same round trip; while the queue keeps
        # giving all that was asked, ask for twice as many without waiting, up to TAKE_BATCH.
        wanted = [wait, take]
        self.taking.set()
        while True:
            taken = [raw for raw in await connection.pipeline(wanted) if raw is not None]
            for raw in taken:
                self._take(raw)
            kept_giving = len(taken) == len(wanted)
            wanted = [take] * min(2 * len(wanted), TAKE_BATCH) if kept_giving else [wait, take]

    def _take(self, raw: bytes) -> None:
        if raw in self._resent and self.is_held(raw):  # routed again after a failover lost its first routing
            self._resent.discard(raw)
            self._drop_copy(raw, "a controller routed it again after the bus lost its first routing")
        elif raw in self._answered_before_loss and not self.is_held(raw):
            self._answered_before_loss.discard(raw)
            self._drop_copy(raw, "the bus lost our take of it with our answer, which is written again")
        else:
            self.dispatch(self, raw)

    def _drop_copy(self, raw: bytes, why: str) -> None:
        self.hold(raw)
        self.drop(raw)
        log.info("took a command we had taken before a second time (%s): the copy is dropped", why)

    async def _heartbeat(self) -> None:
        """Beat every ``heartbeat_interval`` while the intake can take commands (liveness means that: an agent
        that cannot take commands is let be judged lost, never routed to in vain). Register on every new
        connection, and whenever our heartbeat had expired: the controllers may have judged us lost."""
        generation = 0
        while True:
            await self._intake_live.wait()
            was_there = await self._beat()
            if self.bus.generation != generation or not was_there:
                generation = self.bus.generation
                await self._register()
            with trio.move_on_after(self.heartbeat_interval):
                await self.bus.wait_generation(generation)

    async def _beat(self) -> bool:
        """Beat once, however long the bus takes to accept it (a refusal is retried within a beat); return
        whether our previous heartbeat was still there."""
        ttl_ms = int(self.heartbeat_interval * HEARTBEAT_BEATS * 1000)

        async def beat() -> bool:
            heartbeat = Heartbeat(now_ms(), self.running())
            return (await self.bus.set_alive([(self.keys.alive, heartbeat.to_json())], ttl_ms))[0]

        return await self.bus.keep_trying(beat, "our heartbeat", cap=self.heartbeat_interval)

    async def _register(self) -> None:
        place = self.outbox.put(envelope.register_envelope(self.registration()))
        if not self.registered.is_set():
            await self.outbox.delivered(place)
            self.registered.set()
