"""The life of one external job: its runs, and what is reported about them.

Each run waits for a ticket from the slots (a ``max_jobs`` slot, its
turn in its ``queue``; meanwhile it shows ``RUNNING`` in phase ``waiting``),
reports ``RUNNING`` with the pid as soon as its process starts, and ends
``SUCCESS`` (exit code 0), ``ERROR``, ``TIMEOUT`` (past ``max_time``) or
``KILLED``. Then the job either runs again, a failed
run restarted under ``max_restart`` or the next run of a
``recurring_period``, or is over.

A restart keeps the run's slot and its place in its queue: it is part of
the same attempt. Between recurring runs both are given back, and the next
run lines up again.

Every run's end is pushed to the client (one more result, marked ``more``
when another run follows); only the last one is final. Between runs the job
shows ``RUNNING`` in phase ``waiting`` (with the last run's output). A kill
ends the job at once, whatever it was doing: waiting for its turn, running,
or pausing between recurring runs.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import psutil
import trio

from agent.launch import Identity
from agent.loggers import Loggers
from agent.output import RunOutput
from agent.process import DEFAULT_GRACE, Ending, Outcome, ProcessRun, ProcessSpec, SpawnError
from agent.reaper import Reaper
from agent.restarts import RestartPolicy
from agent.slots import Slots, Ticket
from agent.statedb import StateDB
from agent.stats import Stats
from protocol.command import LONG_RUNNING, Command
from protocol.job import Job, echoed_args, now_ms
from protocol.states import Phase, State

log = logging.getLogger(__name__)

#: Called with each job update: ``push`` when a run ended, ``final`` when the job is over.
Report = Callable[[Job, bool, bool], None]


@dataclass(slots=True)
class JobContext:
    """What every job of an agent shares."""

    identity: Identity
    slots: Slots
    loggers: Loggers
    stats: Stats
    state_db: StateDB
    reaper: Reaper
    grace: float = DEFAULT_GRACE

    @property
    def gid(self) -> int:
        return self.identity.gid

    @property
    def nid(self) -> int:
        return self.identity.nid


class ExternalJob:
    """One command run as a process: its runs (restarts, recurring runs) and what is reported of them."""

    def __init__(self, command: Command, spec: ProcessSpec, context: JobContext, report: Report) -> None:
        self.command = command
        self.spec = spec
        self.context = context
        self.report = report
        self.log = context.loggers.for_job(command)
        self.ticket: Ticket = context.slots.enter(command.args.queue)  # the order of arrival
        self.killed = False
        self.silent = False
        self.reason = ""
        self.runs = 0
        self.latest: Job | None = None  # the job as last reported
        self._process: ProcessRun | None = None
        self._pause: trio.CancelScope | None = None

    @property
    def long_running(self) -> bool:
        return self.command.args.max_time == LONG_RUNNING

    def kill(self, *, report: bool = True, reason: str = "killed") -> None:
        """End the job now, answered ``KILLED`` with ``reason``.

        ``report=False`` (the agent is stopping): no final result, and a
        long-running job stays saved, to run again when the agent starts.
        """
        self.killed = True
        self.silent = not report
        self.reason = reason
        if self._pause is not None:
            self._pause.cancel()
        if self._process is not None:
            self._process.kill()

    async def run(self) -> None:
        policy = RestartPolicy(self.command.args.max_restart or 0)
        try:
            while True:
                job, lived = await self._run_once()
                delay = None if self.killed else self._next_run(policy, job, lived)
                if delay is None:
                    break
                job.more = True
                self._report(job, True, False)
                # The run's result is in the client's queue; until the next run, the job itself is unfinished
                # (a 2015 ``Job`` reading the result of a run would never look again).
                job.state, job.more, job.phase, job.pid = State.RUNNING, False, Phase.WAITING, None
                self._report(job, False, False)
                if delay:  # the next recurring run: meanwhile the slot and the queue are free for others
                    self.context.slots.leave(self.ticket)
                    if not await self._killable(trio.sleep, delay):
                        job = self._new_job(State.KILLED, f"{self.reason} (between runs)")
                        break
                    self.ticket = self.context.slots.enter(self.command.args.queue)
            if not self.silent:
                self._report(job, True, True)
        finally:
            self.context.slots.leave(self.ticket)
            self.log.close()

    def _next_run(self, policy: RestartPolicy, job: Job, lived: float) -> float | None:
        """Seconds until the next run (0: a restart), or None: the job is over."""
        if policy.should_restart(job.state, lived):
            log.info("job %s (%s): run %d ended %s; restarting", self.command.id, self.command.cmd, self.runs,
                     job.state)
            return 0.0
        return self.command.args.recurring_period or None

    async def _run_once(self) -> tuple[Job, float]:
        """One run, from waiting for a ticket to its end; the job as it ended, and how long it lived."""
        granted = self.ticket.granted
        if not granted.is_set() and not self.killed:
            self._report(self._new_job(State.RUNNING, phase=Phase.WAITING), False, False)
        ready = not self.killed if granted.is_set() else await self._killable(granted.wait)
        if not ready:
            return self._new_job(State.KILLED, f"{self.reason} (before it started)"), 0.0
        self.runs += 1
        job = self._new_job(State.RUNNING)
        context = self.context
        output = RunOutput(self.log, self.command.args.levels(),
                           lambda line: context.stats.statsd(self.command.id, line))
        process = ProcessRun(self.spec, output, context.grace, context.reaper,
                             partial(context.reaper.stop_strays, context.identity, self.command.id, context.grace))
        try:
            job.pid = process.start()
        except SpawnError as exc:
            job.state, job.data, job.args = State.ERROR, str(exc), echoed_args(job.args)
            return job, 0.0
        self._process = process
        started = trio.current_time()
        context.stats.track(self.command, job.pid)
        if self.long_running:
            self._save_process(job.pid)
        self._report(job, False, False)
        if self.killed:
            process.kill()
        try:
            outcome = await process.wait(max(self.command.args.max_time or 0, 0))
        finally:
            self._process = None
            context.stats.untrack(self.command.id)
        await self.log.flush()
        job.level, job.critical, job.streams = output.level, output.critical, output.streams()
        job.state, reason = _judge(outcome, self.command.args.max_time)
        job.exitcode = outcome.returncode
        job.data = output.data or (self.reason if job.state == State.KILLED else reason)
        job.time = now_ms() - job.starttime
        return job, trio.current_time() - started

    async def _killable(self, wait: Callable[..., Awaitable[object]], *args: object) -> bool:
        """Wait (for a ticket, or between runs); False if a kill came first."""
        if not self.killed:
            with trio.CancelScope() as self._pause:
                await wait(*args)
            self._pause = None
        return not self.killed

    def _report(self, job: Job, push: bool, final: bool) -> None:
        self.latest = job
        self.report(job, push, final)

    def _new_job(self, state: State, data: str = "", phase: Phase | None = None) -> Job:
        job = Job.for_command(self.command, self.context.gid, self.context.nid, state, data=data, phase=phase)
        job.starttime = now_ms()
        return job

    def _save_process(self, pid: int) -> None:
        try:
            started = psutil.Process(pid).create_time()
        except psutil.Error:
            started = None
        self.context.state_db.set_process(self.command.id, pid, started)


def _judge(outcome: Outcome, max_time: float | None) -> tuple[State, str]:
    if outcome.ending is Ending.KILLED:
        return State.KILLED, "killed"
    if outcome.ending is Ending.TIMEOUT:
        return State.TIMEOUT, f"timed out after {max_time:g} s"
    if outcome.returncode == 0:
        return State.SUCCESS, ""
    if outcome.returncode < 0:
        return State.ERROR, f"ended by signal {-outcome.returncode}"
    return State.ERROR, f"exited with code {outcome.returncode}"
