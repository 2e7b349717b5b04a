"""The agent daemon: its parts, each a task under one nursery.

* the intake takes commands from the agent's queue into its inflight list
  (``BLMOVE``), so a command it holds is never lost;
* each command becomes a built-in answer or an external job;
* the outbox carries every update to the controller exactly once;
* the heartbeat keeps the agent alive on the bus, and a registration is sent
  on every (re)connection so the controller knows its roles.
"""

import collections
import contextlib
import json
import logging
import os
import socket
import time

import trio

import agent
from agent.builtins import BUILTINS, BuiltinError
from agent.config import AgentConfig
from agent.jobs import ExternalJob, Identity, execute_spec
from agent.outbox import Outbox
from bus import Bus, Connection, ConnectionLost, open_bus
from protocol import envelope
from protocol.command import Command, MalformedCommand, decode_command
from protocol.job import Job, error_job, now_ms
from protocol.keys import AgentKeys
from protocol.levels import RESULT_JSON
from protocol.states import State

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, config: AgentConfig, bus: Bus) -> None:
        self.config = config
        self.bus = bus
        self.keys = AgentKeys(config.gid, config.nid)
        self.identity = Identity(config.gid, config.nid, str(config.home))
        self.outbox = Outbox(bus, self.keys, on_delivered=self._forget_command)
        self.limiter = trio.CapacityLimiter(config.max_jobs)
        self.jobs: dict[str, ExternalJob] = {}
        self._held: collections.Counter[bytes] = collections.Counter()  # raw commands in our inflight list
        self._started = time.time()
        self._nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.outbox.run)
            nursery.start_soon(self._heartbeat)
            nursery.start_soon(self._register_on_connect)
            await self._answer_leftovers()
            nursery.start_soon(self.bus.serve_dedicated, self._take_commands)
            log.info("agent %s taking commands from %s", self.keys.name, self.bus.address.url)

    # -- intake ---------------------------------------------------------------

    async def _take_commands(self, connection: Connection) -> None:
        for raw in await connection.execute("LRANGE", self.keys.inflight, 0, -1):
            if not self._held[raw]:
                self.dispatch(raw)  # taken just before a lost connection: the reply never came
        while True:
            raw = await connection.execute("BLMOVE", self.keys.commands, self.keys.inflight, "LEFT", "RIGHT", 0)
            self.dispatch(raw)

    async def _answer_leftovers(self) -> None:
        """Commands a previous run of this agent took but never finished."""
        while True:
            try:
                leftovers = await self.bus.execute("LRANGE", self.keys.inflight, 0, -1)
                break
            except ConnectionLost:
                continue
        for raw in leftovers:
            self._held[raw] += 1
            try:
                command = decode_command(raw)
            except MalformedCommand:
                self._drop(raw)
                continue
            job = Job.for_command(command, self.config.gid, self.config.nid, State.ERROR,
                                  data="the agent restarted before this job finished")
            job.starttime = now_ms()
            self._report(job, final=True, raw=raw)

    def dispatch(self, raw: bytes) -> None:
        """Start answering one command taken from the queue."""
        self._held[raw] += 1
        try:
            command = decode_command(raw)
        except MalformedCommand as exc:
            if exc.command_id is None:
                log.error("dropping a command without a usable id: %s", exc)
                self._drop(raw)
            else:
                self._report(error_job(exc.command_id, f"malformed command: {exc}", gid=self.config.gid,
                                       nid=self.config.nid), final=True, raw=raw)
            return
        if command.id in self.jobs:
            job = Job.for_command(command, self.config.gid, self.config.nid, State.DUPLICATE_ID,
                                  data=f"job {command.id} is already running on this agent")
            self.outbox.put(envelope.job_envelope(job, push=True, final=False), finished_command=raw)
            return
        builtin = BUILTINS.get(command.cmd)
        if builtin is not None:
            self._start_guarded(command, raw, self._answer_builtin, builtin, command, raw)
        elif command.cmd == "execute":
            self._start_job(command, raw)
        else:
            job = Job.for_command(command, self.config.gid, self.config.nid, State.UNKNOWN_CMD,
                                  data=f"unknown command {command.cmd!r}")
            self._report(job, final=True, raw=raw)

    # -- answering -------------------------------------------------------------

    async def _answer_builtin(self, builtin, command: Command, raw: bytes) -> None:
        job = Job.for_command(command, self.config.gid, self.config.nid, State.SUCCESS)
        job.starttime = now_ms()
        try:
            job.data = json.dumps(await builtin(command))
            job.level = RESULT_JSON
        except BuiltinError as exc:
            job.state, job.data = State.ERROR, str(exc)
        job.time = now_ms() - job.starttime
        self._report(job, final=True, raw=raw)

    def _start_job(self, command: Command, raw: bytes) -> None:
        def report(job: Job, final: bool) -> None:
            if final:
                self.jobs.pop(command.id, None)
            self._report(job, final=final, raw=raw if final else None)

        job = ExternalJob(command, self.identity, lambda: execute_spec(command, self.identity), self.limiter, report)
        self.jobs[command.id] = job
        self._start_guarded(command, raw, job.run)

    def _start_guarded(self, command: Command, raw: bytes, work, *args) -> None:
        """Run ``work`` as a task; a bug in it fails the job, never the agent."""

        async def guarded() -> None:
            try:
                await work(*args)
            except Exception as exc:
                log.exception("job %s (%s) failed inside the agent", command.id, command.cmd)
                self.jobs.pop(command.id, None)
                job = Job.for_command(command, self.config.gid, self.config.nid, State.ERROR,
                                      data=f"internal error in the agent: {exc!r}")
                job.starttime = now_ms()
                self._report(job, final=True, raw=raw)

        self._nursery.start_soon(guarded)

    def _report(self, job: Job, *, final: bool, raw: bytes | None = None) -> None:
        self.outbox.put(envelope.job_envelope(job, push=final, final=final), finished_command=raw)

    def _drop(self, raw: bytes) -> None:
        """Take an unanswerable command off the inflight list."""
        self.outbox.put_removal(raw)

    def _forget_command(self, raw: bytes) -> None:
        self._held[raw] -= 1
        if self._held[raw] <= 0:
            del self._held[raw]

    # -- presence ----------------------------------------------------------------

    async def _heartbeat(self) -> None:
        interval = self.config.heartbeat_interval
        while True:
            with contextlib.suppress(ConnectionLost):
                await self._beat()
            await trio.sleep(interval)

    async def _beat(self) -> None:
        ttl_ms = int(self.config.heartbeat_interval * 3 * 1000)
        beat = {"time": now_ms(), "running": len(self.jobs)}
        await self.bus.execute("SET", self.keys.alive, json.dumps(beat), "PX", ttl_ms)

    async def _register_on_connect(self) -> None:
        generation = 0
        while True:
            generation = await self.bus.wait_generation(generation)
            try:
                await self._beat()
            except ConnectionLost:
                continue
            self.outbox.put(envelope.register_envelope(self.registration()))

    def registration(self) -> dict:
        return {"gid": self.config.gid, "nid": self.config.nid, "roles": list(self.config.roles),
                "hostname": socket.gethostname(), "version": agent.__version__, "pid": os.getpid(),
                "started": int(self._started), "max_jobs": self.config.max_jobs,
                "heartbeat_interval": self.config.heartbeat_interval}


async def run_agent(config: AgentConfig) -> None:
    name = f"ac-agent-{config.gid}:{config.nid}"
    async with open_bus(config.bus, name) as bus:
        await Agent(config, bus).run()
