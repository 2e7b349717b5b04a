"""The agent daemon: its parts, each a task with an owner.

* one uplink per ``[controllers.<name>]`` (``agent/uplink.py``): outbox,
  and for the controllers of ``[channel] cmds`` heartbeat, registration and
  the intake of commands;
* each command becomes a built-in answer (``agent/builtins.py``) or an
  external job (``agent/jobs.py``) run under the ``max_jobs`` slots and
  queues; job output goes to the loggers, stats to the controllers;
* long-running jobs are kept in the state DB and started again when the
  agent starts; ``[startup.<id>]`` jobs run once at each start.

It tells systemd (``daemon/notify.py``) when it is registered and takes
commands (``READY=1``), pings the watchdog from its event loop, and serves
Prometheus metrics if ``[metrics] listen`` asks for them.

Stopping (SIGTERM, SIGINT, or the ``restart`` command): take no more
commands, kill every job (long-running ones quietly, so the next start runs
them again; the others are answered ``KILLED``), store every message, deliver
the outboxes (for a bounded time), and return. ``restart`` then replaces the
process with a fresh agent (see ``agent/main.py``).

SIGHUP reads the config file again: extensions, startup jobs (new or changed
ones run at once) and the loggers' levels (for jobs that start from then on)
take effect; running jobs go on untouched.
"""

import contextlib
import dataclasses
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio

import agent
from acbus.link import Bus, open_bus
from acdaemon.config import ConfigError
from acdaemon.metrics import serving_metrics
from acdaemon.notify import Notifier
from acdaemon.run import StartError
from acdaemon.signals import handle_signals
from agent.builtins import BUILTINS, Builtin, BuiltinError
from agent.config import AgentConfig, Logger, StartupJob, load_config, swarm_member
from agent.jobs import ExternalJob, JobContext
from agent.launch import Identity, execute_spec, extension_spec
from agent.loggers import Loggers
from agent.metrics import agent_metrics
from agent.process import ProcessSpec, SpawnError, stop_leftover_group
from agent.reaper import Reaper, stop_leftovers
from agent.slots import Slots
from agent.statedb import StateDB
from agent.stats import Stats
from agent.tunnels import Tunnels
from agent.uplink import Uplink
from protocol.command import LONG_RUNNING, Command, MalformedCommand, decode_command, usable_id
from protocol.errors import bounded, shown
from protocol.job import Job, echoed_args, error_job, now_ms
from protocol.keys import AgentKeys
from protocol.levels import RESULT_JSON
from protocol.states import State

log = logging.getLogger(__name__)

#: Seconds a stopping agent waits for its outboxes to reach the bus.
DELIVERY_GRACE = 5.0
#: Settings a reload applies; the others take effect when the agent starts again.
RELOADED = ("extensions", "startup", "loggers")


class Agent:
    def __init__(self, config: AgentConfig, buses: dict[str, Bus], notifier: Notifier | None = None,
                 reread_config: Callable[[], AgentConfig] | None = None, reaper: Reaper | None = None) -> None:
        self.config = config
        self.reread_config = reread_config or partial(load_config, config.path)
        self.notifier = notifier or Notifier({})
        self.metrics_address = ""  # host:port of the metrics endpoint, "" when off
        self.commands_taken = 0
        self.serving = ""  # once ready: what systemd's status line says
        keys = AgentKeys(config.gid, config.nid)
        self.identity = Identity(config.gid, config.nid, str(config.home))
        commanding = set(config.channel_cmds or config.controllers)
        self.uplinks = {
            name: Uplink(name, bus, keys, takes_commands=name in commanding,
                         heartbeat_interval=config.heartbeat_interval, dispatch=self.dispatch,
                         registration=self.registration, running=lambda: len(self.jobs), describe=self.describe)
            for name, bus in buses.items()
        }
        outboxes = {name: uplink.outbox for name, uplink in self.uplinks.items()}
        self.tunnels = Tunnels(config.gid, config.nid, self.uplinks)
        self.loggers = Loggers(config, outboxes)
        stats_to = config.stats_controllers or tuple(outboxes)
        self.stats = Stats(config.gid, config.nid, config.stats_interval, [outboxes[name] for name in stats_to])
        self.state_db = StateDB(config.history_file)
        self.slots = Slots(config.max_jobs)
        self.reaper = reaper or Reaper()
        self.context = JobContext(self.identity, self.slots, self.loggers, self.stats, self.state_db, self.reaper,
                                  config.kill_grace)
        self.jobs: dict[str, ExternalJob] = {}
        self.restarting = False
        self._started = time.time()
        self._stopping = trio.Event()
        self._tasks = 0
        self._tasks_done = trio.Event()
        self._nursery: trio.Nursery | None = None

    # -- life -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.state_db.open()
            self.loggers.open()
        except (OSError, sqlite3.Error, ValueError) as exc:
            raise StartError(f"cannot open the agent's files: {exc}") from None
        try:
            async with trio.open_nursery() as services:
                services.start_soon(self.loggers.run)
                services.start_soon(self.stats.run)
                services.start_soon(self.tunnels.run)
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._stop_leftovers()
                    await self._restore_long_running()
                    self._start_startup_jobs(self.config.startup)
                    for uplink in self.uplinks.values():
                        nursery.start_soon(uplink.run, self._answer_leftovers)
                    log.info("agent %s:%s running; commands from %s", self.config.gid, self.config.nid,
                             ", ".join(name for name, uplink in self.uplinks.items() if uplink.takes_commands))
                    nursery.start_soon(self._announce_ready)
                    await self._stopping.wait()
                    await self._wind_down()
                    nursery.cancel_scope.cancel()
                services.cancel_scope.cancel()
        finally:
            self.state_db.close()

    def stop(self, *, restart: bool = False) -> None:
        """Begin stopping; ``restart``: a fresh agent takes over afterwards."""
        self.restarting = self.restarting or restart
        if self._stopping.is_set():
            return
        if self.restarting:  # the same process goes on (exec): to systemd this is a reload, not a stop
            self.notifier.reloading("restarting")
        else:
            self.notifier.stopping()
        self._stopping.set()

    async def _announce_ready(self) -> None:
        """``READY=1`` once registered with, and taking commands from, a controller (the first to answer)."""
        async with trio.open_nursery() as nursery:
            for uplink in self.uplinks.values():
                if uplink.takes_commands:
                    nursery.start_soon(self._ready_with, uplink, nursery.cancel_scope)

    async def _ready_with(self, uplink: Uplink, done: trio.CancelScope) -> None:
        await uplink.registered.wait()
        await uplink.taking.wait()
        self.serving = f"agent {self.config.gid}:{self.config.nid} taking commands from {uplink.name}"
        self.notifier.ready(self.serving)
        done.cancel()

    def reload(self) -> None:
        """Read the config file again and apply what can change while jobs run (``RELOADED``)."""
        self.notifier.reloading()
        try:
            config = self.reread_config()
        except ConfigError as exc:
            log.error("reload refused, the running config stays: %s", exc)
        else:
            self._apply(config)
        if self.serving:
            self.notifier.ready(self.serving)

    def _apply(self, config: AgentConfig) -> None:
        old = self.config
        fixed = [field.name for field in dataclasses.fields(config)
                 if field.name not in RELOADED and getattr(config, field.name) != getattr(old, field.name)]
        loggers = old.loggers
        if _without_levels(config.loggers) == _without_levels(old.loggers):
            loggers = config.loggers
            levels = {logger.name: logger.levels for logger in loggers}
            for sink in (*self.loggers.db, *self.loggers.ac, *self.loggers.console):
                sink.levels = levels[sink.name]
        else:
            fixed.append("logging (other than levels)")
        if fixed:
            log.warning("reload: %s changed; that takes effect when the agent starts again", ", ".join(fixed))
        self.config = dataclasses.replace(old, extensions=config.extensions, startup=config.startup, loggers=loggers)
        changed = [name for name in RELOADED if getattr(self.config, name) != getattr(old, name)]
        log.info("config reloaded: %s", ", ".join(changed) + " changed" if changed else "nothing changed")
        if self._nursery is not None and not self._stopping.is_set():
            self._start_startup_jobs([job for job in config.startup if job not in old.startup])

    async def _wind_down(self) -> None:
        staying = [job.command.id for job in self.jobs.values() if job.long_running]
        log.info("agent %s:%s stopping%s: stopping %d jobs (answered KILLED)%s", self.config.gid, self.config.nid,
                 " for a restart" if self.restarting else "",
                 len(self.jobs) - len(staying),
                 f"; {len(staying)} long-running jobs ({', '.join(staying[:20])}) stop quietly and start again "
                 "with the next agent" if staying else "")
        for uplink in self.uplinks.values():
            uplink.stop_intake()
        for job in list(self.jobs.values()):
            job.kill(report=not job.long_running, reason="killed: the agent stopped")
        while self._tasks:
            await self._tasks_done.wait()
        await self.loggers.flush()
        with trio.move_on_after(DELIVERY_GRACE) as delivery:
            for uplink in self.uplinks.values():
                await uplink.outbox.delivered()
        if delivery.cancelled_caught:
            log.warning("stopping before every result reached the bus: the bus is away")

    # -- commands -------------------------------------------------------------------------------

    def dispatch(self, uplink: Uplink, raw: bytes) -> None:
        """Start answering one command taken from ``uplink``'s queue; a bug here fails the command, not the agent."""
        self.commands_taken += 1
        uplink.hold(raw)
        try:
            self._dispatch(uplink, raw)
        except Exception as exc:
            log.exception("dispatching a command failed inside the agent")
            command_id = usable_id(_field(raw, "id"))
            if command_id is None:
                uplink.drop(raw)
            else:
                uplink.report(error_job(command_id, f"internal error in the agent: {exc!r}", gid=self.config.gid,
                                        nid=self.config.nid), push=True, final=True, command=raw)

    def _dispatch(self, uplink: Uplink, raw: bytes) -> None:
        try:
            command = decode_command(raw)
        except MalformedCommand as exc:
            if exc.command_id is None:
                log.error("dropping a command without a usable id: %s", exc)
                uplink.drop(raw)
            else:
                uplink.report(error_job(exc.command_id, f"malformed command: {exc}", gid=self.config.gid,
                                        nid=self.config.nid), push=True, final=True, command=raw)
            return
        if self._stopping.is_set():
            self._answer(uplink, raw, command, State.ERROR, "the agent is stopping; send the command again")
        elif command.id in self.jobs:
            job = self._job(command, State.DUPLICATE_ID, f"job {command.id} is already running on this agent")
            uplink.report(job, push=True, final=False, command=raw)
        elif (builtin := BUILTINS.get(command.cmd) or self.tunnels.builtin(command.cmd, uplink)) is not None:
            self._start_task(command, uplink, raw, self._answer_builtin, builtin, command, uplink, raw)
        elif command.cmd == "execute" or command.cmd in self.config.extensions:
            self._start_job(command, uplink, raw)
        else:
            self._answer(uplink, raw, command, State.UNKNOWN_CMD, f"unknown command {shown(command.cmd)}")

    def describe(self, command: Command) -> Job:
        """A job as it is now: as last reported if it runs here, else as just taken."""
        job = self.jobs.get(command.id)
        return job.latest if job is not None and job.latest is not None else self._job(command, State.RUNNING)

    def kill_job(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None:
            return False
        job.kill()
        return True

    def kill_all(self) -> list[str]:
        killed = list(self.jobs)
        for job in list(self.jobs.values()):
            job.kill()
        return killed

    async def _answer_builtin(self, builtin: Builtin, command: Command, uplink: Uplink, raw: bytes) -> None:
        job = self._job(command, State.SUCCESS)
        try:
            job.data = json.dumps(await builtin(self, command))
            job.level = RESULT_JSON
        except BuiltinError as exc:
            job.state, job.data = State.ERROR, str(exc)
        job.time = now_ms() - job.starttime
        uplink.report(job, push=True, final=True, command=raw)

    def _start_job(self, command: Command, uplink: Uplink | None, raw: bytes | None) -> None:
        try:
            spec = self._spec(command)
        except SpawnError as exc:
            if uplink is not None:
                self._answer(uplink, raw, command, State.ERROR, str(exc))
            else:
                log.error("job %s cannot run: %s", command.id, exc)
            return
        long_running = command.args.max_time == LONG_RUNNING and uplink is not None

        def report(job: Job, push: bool, final: bool) -> None:
            if final:
                if self.jobs.get(command.id) is external:
                    del self.jobs[command.id]
                if long_running:
                    self.state_db.remove(command.id)
            if uplink is not None:
                uplink.report(job, push=push, final=final, command=raw if final else None, reopen=long_running)
            elif push:
                log.info("startup job %s: %s%s", job.id, job.state, f": {job.data[:200]}" if job.data else "")

        if long_running:
            self.state_db.add(command.id, uplink.name, raw)
        external = ExternalJob(command, spec, self.context, report)
        self.jobs[command.id] = external
        self._start_task(command, uplink, raw, external.run)

    def _spec(self, command: Command) -> ProcessSpec:
        extension = self.config.extensions.get(command.cmd)
        if extension is None:
            return execute_spec(command, self.identity)
        return extension_spec(command, extension, self.identity)

    def _start_task(self, command: Command, uplink: Uplink | None, raw: bytes | None,
                    work: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run ``work`` as a task; a bug in it fails the job, never the agent."""

        async def guarded() -> None:
            try:
                await work(*args)
            except Exception as exc:
                log.exception("job %s (%s) failed inside the agent", command.id, command.cmd)
                job = self.jobs.pop(command.id, None)
                if job is not None:
                    job.kill(report=False)
                if uplink is not None:
                    self._answer(uplink, raw, command, State.ERROR, f"internal error in the agent: {exc!r}")
            finally:
                self._tasks -= 1
                if not self._tasks:
                    self._tasks_done.set()
                    self._tasks_done = trio.Event()

        self._tasks += 1
        self._nursery.start_soon(guarded)

    def _answer(self, uplink: Uplink, raw: bytes | None, command: Command, state: State, data: str) -> None:
        job = self._job(command, state, bounded(data))
        job.args = echoed_args(job.args)
        uplink.report(job, push=True, final=True, command=raw)

    def _job(self, command: Command, state: State, data: str = "") -> Job:
        job = Job.for_command(command, self.config.gid, self.config.nid, state, data=data)
        job.starttime = now_ms()
        return job

    # -- what a previous run left --------------------------------------------------------

    def _answer_leftovers(self, uplink: Uplink, raws: list[bytes]) -> None:
        """Commands a previous run of this agent took but never finished (long-running ones excepted)."""
        for raw in raws:
            if uplink.is_held(raw):
                continue
            uplink.hold(raw)
            try:
                command = decode_command(raw)
            except MalformedCommand:
                uplink.drop(raw)
                continue
            if command.cmd == "restart":  # it did its work; only its answer did not reach the bus in time
                job = self._job(command, State.SUCCESS, json.dumps("restarted"))
                job.level = RESULT_JSON
                uplink.report(job, push=True, final=True, command=raw)
            else:
                self._answer(uplink, raw, command, State.ERROR, "the agent restarted before this job finished "
                             "(whatever it still ran was stopped)")

    async def _stop_leftovers(self) -> None:
        """Before taking any command: stop every process a previous run of this agent left running (it was
        killed, and took no job down with it). Their jobs are answered as the inflight list is read again."""
        stopped = await stop_leftovers(self.identity, self.config.kill_grace)
        if stopped:
            log.warning("stopped %d processes of jobs a previous run of this agent left running", stopped)

    async def _restore_long_running(self) -> None:
        for saved in self.state_db.jobs():
            if saved.pid is not None and await stop_leftover_group(saved.pid, saved.started, self.config.kill_grace):
                log.warning("job %s: stopped the process group %d a previous agent left running", saved.id,
                            saved.pid)
            uplink = self.uplinks.get(saved.controller)
            try:
                command = decode_command(saved.command)
            except MalformedCommand as exc:
                log.error("state DB: dropping long-running job %s: %s", saved.id, exc)
                self.state_db.remove(saved.id)
                continue
            if uplink is None:
                log.error("state DB: dropping long-running job %s: controller %r is no longer configured",
                          saved.id, saved.controller)
                self.state_db.remove(saved.id)
                continue
            log.info("starting long-running job %s again", saved.id)
            uplink.hold(saved.command)
            self._start_job(command, uplink, saved.command)

    def _start_startup_jobs(self, jobs: tuple[StartupJob, ...] | list[StartupJob]) -> None:
        for startup in jobs:
            command = Command(startup.id, startup.cmd, self.config.gid, self.config.nid, args=startup.args,
                              data=startup.data)
            if command.id in self.jobs:
                log.error("startup job %s not started: a job with that id is running", command.id)
                continue
            self._start_job(command, None, None)

    # -- presence ----------------------------------------------------------------------------

    def registration(self) -> dict:
        return {"gid": self.config.gid, "nid": self.config.nid, "roles": list(self.config.roles),
                "hostname": socket.gethostname(), "version": agent.__version__, "pid": os.getpid(),
                "started": int(self._started), "max_jobs": self.config.max_jobs,
                "heartbeat_interval": self.config.heartbeat_interval, "metrics": self.metrics_address or None}


def _field(raw: bytes, name: str) -> object:
    """One field of a command that may not even be JSON."""
    try:
        fields = json.loads(raw)
    except ValueError:
        return None
    return fields.get(name) if isinstance(fields, dict) else None


def _without_levels(loggers: tuple[Logger, ...]) -> list[Logger]:
    """The loggers' settings other than their levels (a reload cannot change those)."""
    return [dataclasses.replace(logger, levels=frozenset()) for logger in loggers]


async def run_agent(config: AgentConfig, swarm: int = 1) -> bool:
    """Run until stopped; True if the agent should be restarted.

    ``swarm`` > 1 hosts that many agent identities (``agent.config.swarm_member``)
    in this one process: each is a full agent on the wire, and they share the
    trio loop and the buses. A signal, or any member stopping (``restart``),
    stops them all; systemd hears from the first.
    """
    notifier = Notifier()
    async with contextlib.AsyncExitStack() as stack:
        buses = {}
        name = f"ac-agent-{config.gid}:{config.nid}" + (f"+{swarm - 1}" if swarm > 1 else "")
        for controller, address in config.controllers.items():
            buses[controller] = await stack.enter_async_context(open_bus(address, name))
        reaper = Reaper()
        members = [Agent(swarm_member(config, index), buses, notifier if index == 0 else Notifier({}),
                         partial(_reread_member, config.path, index), reaper) for index in range(swarm)]
        metrics = serving_metrics(config.metrics_listen, partial(agent_metrics, members[0]))
        members[0].metrics_address = await stack.enter_async_context(metrics)

        def stop(restart: bool = False) -> None:
            for member in members:
                member.stop(restart=restart)

        def reload() -> None:
            for member in members:
                member.reload()

        async def run_member(member: Agent) -> None:
            await member.run()
            stop(restart=member.restarting)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle_signals, stop, reload)
            nursery.start_soon(notifier.keep_watchdog)
            await nursery.start(reaper.run)
            async with trio.open_nursery() as running:
                for member in members:
                    running.start_soon(run_member, member)
            nursery.cancel_scope.cancel()
        return any(member.restarting for member in members)


def _reread_member(path: Path, index: int) -> AgentConfig:
    return swarm_member(load_config(path), index)
