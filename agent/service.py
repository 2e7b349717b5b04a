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
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable
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
from agent.config import AgentConfig, Logger, StartupJob, load_config, swarm_member
from agent.dispatch import Dispatcher
from agent.jobs import JobContext
from agent.launch import Identity
from agent.loggers import DBLogger, Loggers, Sink
from agent.metrics import agent_metrics
from agent.reaper import Reaper
from agent.recovery import answer_leftovers, restore_long_running, stop_left_processes
from agent.slots import Slots
from agent.statedb import StateDB
from agent.stats import Stats
from agent.tunnels import Tunnels
from agent.uplink import Uplink
from protocol.command import Command
from protocol.job import Job
from protocol.keys import AgentKeys
from protocol.presence import Registration

log = logging.getLogger(__name__)

#: Seconds a stopping agent waits for its outboxes to reach the bus.
DELIVERY_GRACE = 5.0
#: Settings a reload applies; the others take effect when the agent starts again.
RELOADED = ("extensions", "startup", "loggers")


class Agent:
    """One agent identity: its uplinks, loggers, stats, tunnels and jobs, wired together (``run``)."""

    def __init__(self, config: AgentConfig, buses: dict[str, Bus], notifier: Notifier | None = None,
                 reread_config: Callable[[], AgentConfig] | None = None, reaper: Reaper | None = None) -> None:
        self.config = config
        self.reread_config = reread_config or partial(load_config, config.path)
        self.notifier = notifier or Notifier({})
        self.metrics_address = ""  # host:port of the metrics endpoint, "" when off
        self.serving = ""  # once ready: what systemd's status line says
        self.identity = Identity(config.gid, config.nid, str(config.home))
        self.state_db = StateDB(config.history_file)
        self.slots = Slots(config.max_jobs)
        self.reaper = reaper or Reaper()
        keys = AgentKeys(config.gid, config.nid)
        commanding = set(config.channel_cmds or config.controllers)
        self.uplinks = {
            name: Uplink(name, bus, keys, takes_commands=name in commanding,
                         heartbeat_interval=config.heartbeat_interval, dispatch=self._dispatch,
                         registration=self.registration, running=lambda: len(self.dispatcher.jobs),
                         describe=self._describe)
            for name, bus in buses.items()
        }
        outboxes = {name: uplink.outbox for name, uplink in self.uplinks.items()}
        self.tunnels = Tunnels(config.gid, config.nid, self.uplinks)
        self.loggers = Loggers(config, outboxes)
        stats_to = config.stats_controllers or tuple(outboxes)
        self.stats = Stats(config.gid, config.nid, config.stats_interval, [outboxes[name] for name in stats_to])
        context = JobContext(self.identity, self.slots, self.loggers, self.stats, self.state_db, self.reaper,
                             config.kill_grace)
        self.dispatcher = Dispatcher(self.identity, context, self.state_db, self, self.tunnels.builtin,
                                     self.tunnels.wake, lambda: self.config.extensions)
        self.restarting = False
        self._started = time.time()
        self._stopping = trio.Event()

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
                async with trio.open_nursery() as links:
                    async with trio.open_nursery() as job_tasks:  # exits once every job has reported its end
                        self.dispatcher.tasks = job_tasks
                        await self._recover()
                        for uplink in self.uplinks.values():
                            links.start_soon(uplink.run, partial(answer_leftovers, self.dispatcher))
                        log.info("agent %s:%s running; commands from %s", self.config.gid, self.config.nid,
                                 ", ".join(name for name, uplink in self.uplinks.items() if uplink.takes_commands))
                        links.start_soon(self._announce_ready)
                        await self._stopping.wait()
                        self._stop_jobs()
                    await self._deliver()
                    links.cancel_scope.cancel()
                services.cancel_scope.cancel()
        finally:
            self.state_db.close()

    async def _recover(self) -> None:
        """Before taking any command: what a previous run left (``agent/recovery.py``), and the startup jobs."""
        await stop_left_processes(self.identity, self.config.kill_grace)
        await restore_long_running(self.state_db, self.uplinks, self.dispatcher, self.config.kill_grace)
        self._start_startup_jobs(self.config.startup)

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
            sinks: list[Sink] = [*self.loggers.db, *self.loggers.ac, *self.loggers.console]
            for sink in sinks:
                sink.levels = levels[sink.name]
        else:
            fixed.append("logging (other than levels)")
        if fixed:
            log.warning("reload: %s changed; that takes effect when the agent starts again", ", ".join(fixed))
        self.config = dataclasses.replace(old, extensions=config.extensions, startup=config.startup, loggers=loggers)
        changed = [name for name in RELOADED if getattr(self.config, name) != getattr(old, name)]
        log.info("config reloaded: %s", ", ".join(changed) + " changed" if changed else "nothing changed")
        if self.dispatcher.tasks is not None and not self._stopping.is_set():
            self._start_startup_jobs([job for job in config.startup if job not in old.startup])

    def _stop_jobs(self) -> None:
        """Take no more commands and end every job: long-running ones quietly (they run again with the next agent),
        the others answered ``KILLED``."""
        jobs = self.dispatcher.jobs
        staying = [job.command.id for job in jobs.values() if job.long_running]
        log.info("agent %s:%s stopping%s: stopping %d jobs (answered KILLED)%s", self.config.gid, self.config.nid,
                 " for a restart" if self.restarting else "", len(jobs) - len(staying),
                 f"; {len(staying)} long-running jobs ({', '.join(staying[:20])}) stop quietly and start again "
                 "with the next agent" if staying else "")
        self.dispatcher.stopping = True
        for uplink in self.uplinks.values():
            uplink.stop_intake()
        for job in list(jobs.values()):
            job.kill(report=not job.long_running, reason="killed: the agent stopped")

    async def _deliver(self) -> None:
        """Store every message and hand every result to the bus (for ``DELIVERY_GRACE`` at the most)."""
        await self.loggers.flush()
        with trio.move_on_after(DELIVERY_GRACE) as delivery:
            for uplink in self.uplinks.values():
                await uplink.outbox.delivered()
        if delivery.cancelled_caught:
            log.warning("stopping before every result reached the bus: the bus is away")

    # -- commands -------------------------------------------------------------------------------

    def _dispatch(self, uplink: Uplink, raw: bytes) -> None:
        self.dispatcher.dispatch(uplink, raw)

    def _describe(self, command: Command) -> Job:
        return self.dispatcher.describe(command)

    def _start_startup_jobs(self, jobs: tuple[StartupJob, ...] | list[StartupJob]) -> None:
        for startup in jobs:
            command = Command(startup.id, startup.cmd, self.config.gid, self.config.nid, args=startup.args,
                              data=startup.data)
            if command.id in self.dispatcher.jobs:
                log.error("startup job %s not started: a job with that id is running", command.id)
                continue
            self.dispatcher.start_job(command, None)

    # -- what built-ins may use (``agent.builtins.Node``) -----------------------------------------

    @property
    def message_db(self) -> DBLogger | None:
        return self.loggers.database

    def kill_job(self, job_id: str) -> bool:
        job = self.dispatcher.jobs.get(job_id)
        if job is None:
            return False
        job.kill()
        return True

    def kill_all(self) -> list[str]:
        killed = list(self.dispatcher.jobs)
        for job in list(self.dispatcher.jobs.values()):
            job.kill()
        return killed

    def restart(self) -> None:
        self.stop(restart=True)

    # -- presence ----------------------------------------------------------------------------

    def registration(self) -> Registration:
        config = self.config
        return Registration(config.gid, config.nid, tuple(config.roles), socket.gethostname(), agent.__version__,
                            os.getpid(), int(self._started), config.max_jobs, config.heartbeat_interval,
                            self.metrics_address or None)


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
