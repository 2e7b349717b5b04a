"""Announcing what happened on ``ac:ctl:events``, for peers, tools and tests."""

import json
from typing import Any

from acbus.link import Bus
from protocol import keys

AGENT_REGISTERED = "agent_registered"
AGENT_LOST = "agent_lost"
BUS_DATA_LOST = "bus_data_lost"
CONTROLLER_STARTED = "controller_started"


async def publish(bus: Bus, event: str, **details: Any) -> None:
    await bus.execute("PUBLISH", keys.EVENTS, json.dumps({"event": event, **details}))
