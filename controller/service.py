"""The controller daemon: its parts, each a task under one nursery.

* ``Intake``    takes commands from ``cmds_queue`` and routes them;
* ``Collector`` drains agent outboxes into the client-facing keys;
* ``Liveness``  watches agent and controller heartbeats;
* events from peers (registrations) keep the local registry current.
"""

import json
import logging
import os
import socket
import uuid

import trio

from bus import Bus, Connection, open_bus
from controller import events, scripts
from controller.config import ControllerConfig
from controller.intake import Intake
from controller.internal import Internal
from controller.liveness import Liveness
from controller.registry import Registry
from controller.results import Collector
from protocol import keys

log = logging.getLogger(__name__)


class Controller:
    def __init__(self, config: ControllerConfig, bus: Bus, controller_id: str) -> None:
        self.config = config
        self.bus = bus
        self.id = controller_id
        self.registry = Registry()
        self.internal = Internal(self.registry)
        self.intake = Intake(config, bus, self.registry, controller_id, self.internal)
        self.collector = Collector(config, bus, self.on_registration)
        self.liveness = Liveness(config, bus, self.registry, controller_id)

    async def run(self) -> None:
        connection = await self.bus.connection()
        for script in scripts.ALL:
            await script.load(connection)
        await self.liveness.sweep(slow=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.bus.serve_dedicated, self._follow_events)
            nursery.start_soon(self.collector.run)
            nursery.start_soon(self.liveness.run)
            nursery.start_soon(self.intake.run)
            await events.publish(self.bus, events.CONTROLLER_STARTED, controller=self.id)
            log.info("controller %s routing commands from %s on %s", self.id, keys.CMDS_QUEUE, self.bus.address.url)

    async def on_registration(self, gid: int, nid: int, registration: dict) -> None:
        """An agent (re)registered through our drain: tell every controller."""
        self.registry.register(gid, nid, registration)
        log.info("agent %d:%d registered with roles %s", gid, nid, registration.get("roles"))
        await events.publish(self.bus, events.AGENT_REGISTERED, agent=keys.agent_name(gid, nid),
                             registration=registration)

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
