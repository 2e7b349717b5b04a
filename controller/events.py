"""Announcing what happened on ``ac:ctl:events``, for peers, tools and tests (``protocol/events.py``)."""

from typing import Any

from acbus.connection import Connection
from acbus.link import Bus
from protocol import keys
from protocol.events import (
    AGENT_FORGOTTEN,
    AGENT_LOST,
    AGENT_REGISTERED,
    BUS_DATA_LOST,
    BUS_FAILOVER,
    CONTROLLER_STARTED,
    encode_event,
)

__all__ = ["AGENT_FORGOTTEN", "AGENT_LOST", "AGENT_REGISTERED", "BUS_DATA_LOST", "BUS_FAILOVER", "CONTROLLER_STARTED",
           "publish", "publish_all"]


async def publish(bus: Bus | Connection, event: str, **details: Any) -> None:
    await bus.execute("PUBLISH", keys.EVENTS, encode_event(event, **details))


async def publish_all(bus: Bus, event: str, each: list[dict[str, Any]]) -> None:
    """One ``event`` for each of ``each`` (its details), in one round trip."""
    if each:
        await bus.pipeline([("PUBLISH", keys.EVENTS, encode_event(event, **details)) for details in each])
