"""The life of one external job: wait for a slot, run, report.

A job reports ``RUNNING`` (with the pid) as soon as its process starts and
a final job when it ends: ``SUCCESS`` for exit code 0, ``ERROR`` otherwise,
``TIMEOUT`` past ``max_time``, ``KILLED`` when killed.
"""

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import trio

from agent.output import JobOutput
from agent.process import Ending, Outcome, ProcessRun, ProcessSpec, SpawnError
from protocol.command import Command
from protocol.job import Job, now_ms
from protocol.states import State

log = logging.getLogger(__name__)

#: Called with each job update; ``final`` when the job is over.
Report = Callable[[Job, bool], None]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who runs the job: the environment every child gets."""

    gid: int
    nid: int
    home: str

    def environment(self, command: Command) -> dict[str, str]:
        env = dict(os.environ)
        env.update(AGENT_GID=str(self.gid), AGENT_NID=str(self.nid), AGENT_JOBID=command.id, AGENT_HOME=self.home)
        env.update(command.args.env or {})
        return env


def execute_spec(command: Command, identity: Identity) -> ProcessSpec:
    """``execute``: ``args.name`` is the binary, ``args.args`` its arguments, ``data`` its stdin."""
    if not command.args.name:
        raise SpawnError("execute needs args.name: the binary to run")
    return ProcessSpec(
        argv=(command.args.name, *(command.args.args or ())),
        cwd=command.args.working_dir,
        env=identity.environment(command),
        stdin=command.data.encode(),
    )


class ExternalJob:
    def __init__(self, command: Command, identity: Identity, spec: Callable[[], ProcessSpec],
                 limiter: trio.CapacityLimiter, report: Report) -> None:
        self.command = command
        self.identity = identity
        self.spec = spec
        self.limiter = limiter
        self.report = report
        self.process: ProcessRun | None = None
        self.killed = False

    def kill(self) -> None:
        self.killed = True
        if self.process is not None:
            self.process.kill()

    async def run(self) -> None:
        job = Job.for_command(self.command, self.identity.gid, self.identity.nid, State.RUNNING)
        async with self.limiter:
            if self.killed:
                self._finish(job, State.KILLED, "killed before it started")
                return
            job.starttime = now_ms()
            output = JobOutput(self.command.args.levels())
            try:
                self.process = ProcessRun(self.spec(), output.add)
                job.pid = await self.process.start()
            except SpawnError as exc:
                self._finish(job, State.ERROR, str(exc))
                return
            self.report(job, False)
            outcome = await self.process.wait(self.command.args.max_time or 0)
        job.level, job.data, job.critical = output.level, output.data, output.critical
        job.streams = output.streams()
        state, reason = _judge(outcome, self.command.args.max_time)
        self._finish(job, state, job.data or reason)

    def _finish(self, job: Job, state: State, data: str) -> None:
        job.state = state
        job.data = data
        job.time = now_ms() - job.starttime if job.starttime else 0
        job.starttime = job.starttime or now_ms()
        self.report(job, True)


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
