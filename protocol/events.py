"""What the controllers announce on ``keys.EVENTS`` (pub/sub): one JSON object per event.

``{"event": <name>, ...details}``, the details by event:

``controller_started``  ``controller`` (its id), ``metrics`` (its metrics address or "")
``agent_registered``    ``agent`` ("<gid>:<nid>"), ``registration`` (as ``protocol.presence.Registration``),
                        ``new`` (the bus had never seen that agent), ``controller`` (the one that took it)
``agent_lost``          ``agent``
``agent_forgotten``     ``agent``: its registration was dropped (``forget_after``, or ``forget_agent``)
``bus_data_lost``       ``controller``: the one that found the bus had lost its data
``bus_failover``        ``controller``: the one that found the bus on a new master (Sentinel) and set a new epoch

Peers follow ``agent_registered`` to keep their registries current; tools and
tests may follow any of them.
"""

import json
from typing import Any

from protocol.jsontext import compact

CONTROLLER_STARTED = "controller_started"
AGENT_REGISTERED = "agent_registered"
AGENT_LOST = "agent_lost"
AGENT_FORGOTTEN = "agent_forgotten"
BUS_DATA_LOST = "bus_data_lost"
BUS_FAILOVER = "bus_failover"


def encode_event(event: str, **details: Any) -> str:
    return compact({"event": event, **details})


def decode_event(raw: bytes | str) -> dict[str, Any]:
    """An event as a dict with at least ``event``; ``ValueError`` if it is not one."""
    event = json.loads(raw)
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise ValueError(f"not an event: {raw[:200]!r}")
    return event
