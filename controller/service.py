"""The controller daemon: its parts, each a task under one nursery.

* ``Intake``        takes commands from ``cmds_queue`` and routes them;
* ``Collector``     drains agent outboxes into the client-facing keys;
* ``Liveness``      watches agent and controller heartbeats;
* ``Scheduler``     submits scheduled commands at their ticks;
* ``EventHandlers`` runs the ``[events]`` command lines;
* ``TunnelRelay``   relays tunnel connections between agents;
* events from peers (registrations) keep the local registry current.

SIGTERM and SIGINT stop it cleanly: the batch being routed goes back to
``cmds_queue`` at once instead of waiting for a peer to notice.
"""

import json
import logging
import os
import signal
import socket
import uuid

import trio

from bus import Bus, Connection, ConnectionLost, open_bus
from controller import events, scripts
from controller.config import ControllerConfig
from controller.handlers import EventHandlers
from controller.intake import Intake, lane_ids
from controller.internal import Internal
from controller.liveness import Liveness
from controller.registry import Registry
from controller.results import Collector
from controller.scheduler import Scheduler
from controller.tunnels import TunnelRelay
from protocol import keys

log = logging.getLogger(__name__)


#: Seconds a clean stop may take to hand back the batch being routed.
RELEASE_TIMEOUT = 5.0


class Controller:
    def __init__(self, config: ControllerConfig, bus: Bus, controller_id: str) -> None:
        self.config = config
        self.bus = bus
        self.id = controller_id
        self.registry = Registry()
        self.internal = Internal(config, bus, self.registry)
        self.intake = Intake(config, bus, self.registry, controller_id, self.internal)
        self.collector = Collector(config, bus, self.registry, self.on_registration)
        self.liveness = Liveness(config, bus, self.registry, lane_ids(controller_id))
        self.scheduler = Scheduler(bus)
        self.handlers = EventHandlers(config)
        self.tunnels = TunnelRelay(config, bus, self.registry, controller_id)

    async def run(self) -> None:
        connection = await self.bus.connection()
        for script in scripts.ALL:
            await script.load(connection)
        await self.liveness.sweep(slow=True)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_on_signal, nursery.cancel_scope)
                await nursery.start(self.handlers.run)
                nursery.start_soon(self.bus.serve_dedicated, self._follow_events)
                nursery.start_soon(self.collector.run)
                nursery.start_soon(self.liveness.run)
                nursery.start_soon(self.scheduler.run)
                nursery.start_soon(self.intake.run)
                nursery.start_soon(self.tunnels.run)
                await events.publish(self.bus, events.CONTROLLER_STARTED, controller=self.id)
                log.info("controller %s routing commands from %s on %s", self.id, keys.CMDS_QUEUE,
                         self.bus.address.url)
        finally:
            with trio.move_on_after(RELEASE_TIMEOUT) as scope:
                scope.shield = True
                try:
                    await self.liveness.release()
                except ConnectionLost as exc:
                    log.warning("could not hand back our batch (%s); a peer will take it over", exc)

    async def _stop_on_signal(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                scope.cancel()
                return

    async def on_registration(self, gid: int, nid: int, registration: dict, new: bool) -> None:
        """An agent (re)registered through our drain: tell every controller, run the handler."""
        self.registry.register(gid, nid, registration)
        log.info("agent %d:%d %s with roles %s", gid, nid, "registered" if new else "registered again",
                 registration.get("roles"))
        self.handlers.fire("agent_registered" if new else "agent_returned", gid, nid)
        await events.publish(self.bus, events.AGENT_REGISTERED, agent=keys.agent_name(gid, nid),
                             registration=registration, new=new)

    async def _follow_events(self, connection: Connection) -> None:
        """Registrations drained by peers reach our registry through the events channel."""
        await connection.psubscribe(keys.EVENTS)
        while True:
            _, raw = await connection.next_message()
            try:
                event = json.loads(raw)
                if event.get("event") == events.AGENT_REGISTERED:
                    gid, nid = keys.parse_agent_name(event["agent"])
                    self.registry.register(gid, nid, event["registration"])
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring a malformed event: %r", raw[:200])


async def run_controller(config: ControllerConfig) -> None:
    controller_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    async with open_bus(config.bus, f"ac-controller-{controller_id}") as bus:
        await Controller(config, bus, controller_id).run()
