"""What becomes of each command the agent takes: an answer at once, a built-in, or an external job.

``Taken`` is a command as taken from one controller's queue: its raw text
(which stays in the agent's inflight list until its final result is in the
outbox) and the uplink it came from, where every answer goes. The
``Dispatcher`` decides, in this order: a command that is not one is answered
``ERROR`` naming the bad field (or dropped, without a usable id); a stopping
agent answers ``ERROR``; a job id it holds already is ``DUPLICATE_ID``; a
built-in is answered (at once, or in a task); ``execute`` and the
``[extensions.*]`` commands become external jobs; anything else is
``UNKNOWN_CMD``. A bug met on the way fails that command, never the agent.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from agent.builtins import BUILTINS, Builtin, BuiltinError, Node
from agent.jobs import ExternalJob, JobContext
from agent.launch import Extension, Identity, execute_spec, extension_spec
from agent.process import ProcessSpec, SpawnError
from agent.statedb import StateDB
from protocol.command import LONG_RUNNING, Command, MalformedCommand, decode_command, usable_id
from protocol.errors import ProtocolError, bounded, shown
from protocol.job import Job, echoed_args, error_job, now_ms
from protocol.levels import RESULT_JSON
from protocol.states import State
from protocol.tunnels import WAKE_UP

if TYPE_CHECKING:
    from agent.uplink import Uplink

log = logging.getLogger(__name__)

#: ``(command, taken)`` -> the built-in answering a tunnel command that came over ``taken``'s uplink, if any.
TunnelBuiltins = Callable[[str, "Uplink"], Builtin | None]


@dataclass(frozen=True, slots=True, eq=False)
class Taken:
    """A command taken from ``uplink``'s queue, as ``raw`` text (it stays in the inflight list until answered)."""

    uplink: "Uplink"
    raw: bytes

    def answer(self, job: Job, *, final: bool = True) -> None:
        """Report a result that ends this command here (``final``: and the job; a ``DUPLICATE_ID`` is not)."""
        self.uplink.report(job, push=True, final=final, command=self.raw)

    def update(self, job: Job, *, push: bool, final: bool, reopen: bool = False) -> None:
        """Report an update of the command's job; the command leaves the inflight list with the final one."""
        self.uplink.report(job, push=push, final=final, command=self.raw if final else None, reopen=reopen)

    def drop(self) -> None:
        """Take an unanswerable command off the inflight list."""
        self.uplink.drop(self.raw)


class Dispatcher:
    """Turns taken commands into answers, built-ins and external jobs (``jobs``: the external jobs by id)."""

    def __init__(self, identity: Identity, context: JobContext, state_db: StateDB, node: Node,
                 tunnel_builtins: TunnelBuiltins, wake_tunnels: Callable[["Uplink"], None],
                 extensions: Callable[[], dict[str, Extension]]) -> None:
        self.identity = identity
        self.context = context
        self.state_db = state_db
        self.node = node
        self.tunnel_builtins = tunnel_builtins
        self.wake_tunnels = wake_tunnels
        self.extensions = extensions  # the current [extensions.*] (a reload may change them)
        self.jobs: dict[str, ExternalJob] = {}
        self.tasks: trio.Nursery | None = None  # owns every job's and built-in's task; set once the agent runs
        self.stopping = False
        self.taken = 0  # commands taken, for the metrics

    def dispatch(self, uplink: "Uplink", raw: bytes) -> None:
        """Start answering one command taken from ``uplink``'s queue; a bug here fails the command, not the agent."""
        uplink.hold(raw)
        taken = Taken(uplink, raw)
        if raw == WAKE_UP:  # not a command: a controller has tunnel orders for us
            taken.drop()
            self.wake_tunnels(uplink)
            return
        self.taken += 1
        try:
            self._dispatch(taken)
        except Exception as exc:
            log.exception("dispatching a command failed inside the agent")
            command_id = usable_id(_field(raw, "id"))
            if command_id is None:
                taken.drop()
            else:
                taken.answer(error_job(command_id, f"internal error in the agent: {exc!r}", gid=self.identity.gid,
                                       nid=self.identity.nid))

    def _dispatch(self, taken: Taken) -> None:
        try:
            command = decode_command(taken.raw)
        except MalformedCommand as exc:
            if exc.command_id is None:
                log.error("dropping a command without a usable id: %s", exc)
                taken.drop()
            else:
                taken.answer(error_job(exc.command_id, f"malformed command: {exc}", gid=self.identity.gid,
                                       nid=self.identity.nid))
            return
        if self.stopping:
            self.refuse(taken, command, State.ERROR, "the agent is stopping; send the command again")
        elif command.id in self.jobs:
            job = self.job(command, State.DUPLICATE_ID, f"job {command.id} is already running on this agent")
            taken.answer(job, final=False)
        elif (builtin := BUILTINS.get(command.cmd) or self.tunnel_builtins(command.cmd, taken.uplink)) is not None:
            self._answer_builtin(builtin, command, taken)
        elif command.cmd == "execute" or command.cmd in self.extensions():
            self.start_job(command, taken)
        else:
            self.refuse(taken, command, State.UNKNOWN_CMD, f"unknown command {shown(command.cmd)}")

    # -- built-ins -------------------------------------------------------------------------------

    def _answer_builtin(self, builtin: Builtin, command: Command, taken: Taken) -> None:
        job = self.job(command, State.SUCCESS)
        if not builtin.inline:
            self._start_task(command, taken, self._await_builtin, builtin, command, job, taken)
            return
        try:
            result = builtin.handler(self.node, command)
        except (BuiltinError, ProtocolError) as exc:
            self._conclude(job, taken, error=exc)
        else:
            self._conclude(job, taken, result)

    async def _await_builtin(self, builtin: Builtin, command: Command, job: Job, taken: Taken) -> None:
        try:
            result = await builtin.handler(self.node, command)
        except (BuiltinError, ProtocolError) as exc:
            self._conclude(job, taken, error=exc)
        else:
            self._conclude(job, taken, result)

    @staticmethod
    def _conclude(job: Job, taken: Taken, result: Any = None, error: Exception | None = None) -> None:
        """Answer a built-in: its result as level-20 JSON, or ``ERROR`` saying what was wrong."""
        if error is None:
            job.data, job.level = json.dumps(result), RESULT_JSON
        else:
            job.state, job.data = State.ERROR, bounded(str(error))
        job.time = now_ms() - job.starttime
        taken.answer(job)

    # -- external jobs ----------------------------------------------------------------------------

    def start_job(self, command: Command, taken: Taken | None) -> None:
        """Run ``command`` as an external job; ``taken`` ``None``: a startup job, reported in the agent's log."""
        try:
            spec = self._spec(command)
        except SpawnError as exc:
            if taken is not None:
                self.refuse(taken, command, State.ERROR, str(exc))
            else:
                log.error("job %s cannot run: %s", command.id, exc)
            return
        long_running = command.args.max_time == LONG_RUNNING and taken is not None

        def report(job: Job, push: bool, final: bool) -> None:
            if final:
                if self.jobs.get(command.id) is external:
                    del self.jobs[command.id]
                if long_running:
                    self.state_db.remove(command.id)
            if taken is not None:
                taken.update(job, push=push, final=final, reopen=long_running)
            elif push:
                log.info("startup job %s: %s%s", job.id, job.state, f": {job.data[:200]}" if job.data else "")

        if long_running and taken is not None:  # (long_running implies taken)
            self.state_db.add(command.id, taken.uplink.name, taken.raw)
        external = ExternalJob(command, spec, self.context, report)
        self.jobs[command.id] = external
        self._start_task(command, taken, external.run)

    def _spec(self, command: Command) -> ProcessSpec:
        extension = self.extensions().get(command.cmd)
        if extension is None:
            return execute_spec(command, self.identity)
        return extension_spec(command, extension, self.identity)

    def _start_task(self, command: Command, taken: Taken | None, work: Callable[..., Awaitable[None]],
                    *args: object) -> None:
        """Run ``work`` as a task of the job tasks; a bug in it fails the job, never the agent."""

        async def guarded() -> None:
            try:
                await work(*args)
            except Exception as exc:
                log.exception("job %s (%s) failed inside the agent", command.id, command.cmd)
                job = self.jobs.pop(command.id, None)
                if job is not None:
                    job.kill(report=False)
                if taken is not None:
                    self.refuse(taken, command, State.ERROR, f"internal error in the agent: {exc!r}")

        assert self.tasks is not None, "the agent runs"
        self.tasks.start_soon(guarded)

    # -- answers ---------------------------------------------------------------------------------------

    def refuse(self, taken: Taken, command: Command, state: State, data: str) -> None:
        """Answer ``command`` at once with a final ``state`` (what it repeats of the command bounded)."""
        job = self.job(command, state, bounded(data))
        job.args = echoed_args(job.args)
        taken.answer(job)

    def job(self, command: Command, state: State, data: str = "") -> Job:
        job = Job.for_command(command, self.identity.gid, self.identity.nid, state, data=data)
        job.starttime = now_ms()
        return job

    def describe(self, command: Command) -> Job:
        """A job as it is now: as last reported if it runs here, else as just taken."""
        job = self.jobs.get(command.id)
        return job.latest if job is not None and job.latest is not None else self.job(command, State.RUNNING)


def _field(raw: bytes, name: str) -> object:
    """One field of a command that may not even be JSON."""
    try:
        fields = json.loads(raw)
    except ValueError:
        return None
    return fields.get(name) if isinstance(fields, dict) else None
