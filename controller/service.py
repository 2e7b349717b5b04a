"""The controller daemon: its parts, each a task under one nursery.

* ``Intake``        takes commands from ``cmds_queue`` and routes them;
* ``Collector``     drains agent outboxes into the client-facing keys;
* ``Liveness``      watches agent and controller heartbeats;
* ``Scheduler``     submits scheduled commands at their ticks;
* ``Rollouts``      moves rollouts on, wave by wave;
* ``EventHandlers`` runs the ``[events]`` command lines;
* ``TunnelRelay``   relays tunnel connections between agents;
* events from peers (registrations) keep the local registry current.

It tells systemd (``daemon/notify.py``) when it routes (``READY=1``), pings
the watchdog from its event loop, and serves Prometheus metrics if
``[metrics] listen`` asks for them.

SIGTERM and SIGINT stop it cleanly: it claims no more commands, routes the
batches it already claimed, and hands back anything a cut-short claim took,
so nothing waits for a peer to notice. SIGHUP reloads the config file: every
setting but the bus and the metrics address takes effect at once.
"""

import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Callable
from functools import partial

import trio

from acbus.connection import Connection, ConnectionLost, ReplyError
from acbus.link import Bus, open_bus
from acdaemon.config import ConfigError
from acdaemon.metrics import serving_metrics
from acdaemon.notify import Notifier
from acdaemon.signals import handle_signals
from controller import events, scripts
from controller.builtins import Builtins
from controller.collector import Collector, Registered
from controller.config import ControllerConfig
from controller.handlers import EventHandlers
from controller.intake import Intake, lane_ids
from controller.liveness import Liveness
from controller.metrics import controller_metrics
from controller.registry import Registry
from controller.rollouts import Rollouts
from controller.scheduler import Scheduler
from controller.tunnels import TunnelRelay
from protocol import keys
from protocol.events import decode_event
from protocol.presence import Registration

log = logging.getLogger(__name__)


#: Seconds a clean stop may take to route the batches claimed, and then to hand back the rest.
FINISH_TIMEOUT = 5.0
RELEASE_TIMEOUT = 5.0
#: Settings a reload cannot change: they take effect when the controller starts again.
FIXED_AT_START = ("bus", "metrics_listen")


class Controller:
    """One controller: its parts wired together, run until stopped, reloaded on SIGHUP."""

    def __init__(self, config: ControllerConfig, bus: Bus, controller_id: str, notifier: Notifier | None = None,
                 reread_config: Callable[[], ControllerConfig] | None = None) -> None:
        self.config = config
        self.bus = bus
        self.id = controller_id
        self.notifier = notifier or Notifier({})
        self.reread_config = reread_config
        self.registry = Registry()
        self.rollouts = Rollouts(config, bus, self.registry)
        self.builtins = Builtins(config, bus, self.registry, self.rollouts)
        self.intake = Intake(config, bus, self.registry, controller_id, self.builtins)
        self.collector = Collector(config, bus, self.registry, self.on_registrations, on_results=self.rollouts.poke)
        self.liveness = Liveness(config, bus, self.registry, lane_ids(controller_id))
        bus.on_switch = self.liveness.on_switch  # a failover: look at the books again on the new master first
        self.scheduler = Scheduler(bus)
        self.handlers = EventHandlers(config)
        self.tunnels = TunnelRelay(config, bus, self.registry, controller_id)
        self.serving = ""  # once ready: what systemd's status line says
        self._starting = trio.CancelScope()
        self._stopping = trio.Event()
        self._routed_all = trio.Event()

    async def run(self) -> None:
        """Route until ``stop`` (SIGTERM, SIGINT)."""
        try:
            async with serving_metrics(self.config.metrics_listen, partial(controller_metrics, self)) as metrics, \
                    trio.open_nursery() as nursery:
                nursery.start_soon(handle_signals, self.stop, self.reload)
                nursery.start_soon(self.notifier.keep_watchdog)
                with self._starting:
                    await self._start(nursery)
                if not self._starting.cancelled_caught:
                    await events.publish(self.bus, events.CONTROLLER_STARTED, controller=self.id, metrics=metrics)
                    self.serving = f"controller {self.id} routing commands from {keys.CMDS_QUEUE} on " \
                                   f"{self.bus.address.url}"
                    log.info(self.serving)
                    self.notifier.ready(self.serving)
                    await self._stopping.wait()
                    self.intake.stop()
                    with trio.move_on_after(FINISH_TIMEOUT):
                        await self._routed_all.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(RELEASE_TIMEOUT) as scope:
                scope.shield = True
                try:
                    await self.liveness.release()
                except (ConnectionLost, ReplyError) as exc:
                    log.warning("could not hand back our batch (%s); a peer will take it over", exc)
        log.info("controller %s stopped after routing %d commands", self.id, self.intake.routed)

    async def _start(self, nursery: trio.Nursery) -> None:
        self.notifier.status(f"connecting to the bus at {self.bus.address.url}")

        async def load_scripts() -> None:
            connection = await self.bus.connection()
            for script in scripts.ALL:
                await script.load(connection)

        await self.bus.keep_trying(load_scripts, "loading our scripts")
        await self.bus.keep_trying(self.liveness.sweep, "the first liveness sweep")
        await nursery.start(self.handlers.run)
        nursery.start_soon(self.bus.serve_dedicated, self._follow_events)
        nursery.start_soon(self.collector.run)
        nursery.start_soon(self.liveness.run)
        nursery.start_soon(self.scheduler.run)
        nursery.start_soon(self.rollouts.run)
        nursery.start_soon(self.tunnels.run)
        await nursery.start(self._route)

    async def _route(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.intake.run(task_status=task_status)
        self._routed_all.set()

    def stop(self) -> None:
        """Begin a clean stop: route what was claimed, claim nothing more."""
        if not self._stopping.is_set():
            log.info("controller %s stopping: routing the commands it claimed, then handing back the rest", self.id)
            self.notifier.stopping()
        self._stopping.set()
        self._starting.cancel()  # not serving yet: nothing to finish

    def reload(self) -> None:
        """Read the config file again; keep the running config if the new one is not usable."""
        if self.reread_config is None:
            log.warning("reload: the controller runs without a config file; nothing to reload")
            return
        self.notifier.reloading()
        try:
            config = self.reread_config()
        except (ConfigError, ValueError) as exc:
            log.error("reload refused, the running config stays: %s", exc)
        else:
            fixed = [name for name in FIXED_AT_START if getattr(config, name) != getattr(self.config, name)]
            if fixed:
                log.warning("reload: %s changed; that takes effect when the controller starts again", ", ".join(fixed))
                config = dataclasses.replace(config, **{name: getattr(self.config, name) for name in fixed})
            changed = [field.name for field in dataclasses.fields(config)
                       if getattr(config, field.name) != getattr(self.config, field.name)]
            self.config = config
            for part in (self.builtins, self.intake, self.collector, self.liveness, self.handlers, self.tunnels,
                         self.rollouts):
                part.config = config
            log.info("config reloaded: %s", ", ".join(changed) + " changed" if changed else "nothing changed")
        if self.serving:
            self.notifier.ready(self.serving)

    async def on_registrations(self, registered: list[Registered]) -> None:
        """Agents (re)registered through our drains: tell every controller (one round trip), run the handlers."""
        for gid, nid, registration, new in registered:
            self.registry.register(gid, nid, registration)
            log.info("agent %d:%d %s with roles %s", gid, nid, "registered" if new else "registered again",
                     list(registration.roles))
            self.handlers.fire("agent_registered" if new else "agent_returned", gid, nid)
        await events.publish_all(self.bus, events.AGENT_REGISTERED, [
            {"agent": keys.agent_name(gid, nid), "registration": registration.to_wire(), "new": new,
             "controller": self.id}
            for gid, nid, registration, new in registered])

    async def _follow_events(self, connection: Connection) -> None:
        """Registrations drained by peers reach our registry through the events channel."""
        await connection.psubscribe(keys.EVENTS)
        while True:
            _, raw = await connection.next_message()
            try:
                event = decode_event(raw)
                if event["event"] == events.AGENT_REGISTERED and event.get("controller") != self.id:
                    gid, nid = keys.parse_agent_name(event["agent"])
                    self.registry.register(gid, nid, Registration.from_wire(gid, nid, event["registration"]))
                elif event["event"] == events.AGENT_FORGOTTEN:
                    view = self.registry.get(*keys.parse_agent_name(event["agent"]))
                    if view is not None:
                        self.registry.drop(view)
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring a malformed event: %r", raw[:200])


async def run_controller(config: ControllerConfig, reread_config: Callable[[], ControllerConfig] | None = None) -> None:
    """Run a controller until it is stopped; ``reread_config`` reads the config file again (SIGHUP)."""
    controller_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    async with open_bus(config.bus, f"ac-controller-{controller_id}") as bus:
        await Controller(config, bus, controller_id, Notifier(), reread_config).run()
