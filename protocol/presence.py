"""How an agent says it is there: its registration and its heartbeat.

The agent writes both (``agent/uplink.py``); the controllers read them
(``controller/registry.py``, ``list_agents``). Both are read tolerantly: a
field an older agent does not send, or sends broken, is left unknown
(``None``, or an empty list of roles) instead of refusing the agent, so
agents of the previous version are served during a rolling upgrade.
"""

import json
from dataclasses import dataclass
from typing import Any

from protocol.fields import is_integer, number_or_none
from protocol.jsontext import compact

#: Seconds between an agent's heartbeats when its registration does not say.
DEFAULT_HEARTBEAT_INTERVAL = 2.0
#: A heartbeat lives this many beats.
HEARTBEAT_BEATS = 3
#: Characters kept of a registration's text fields (hostname, version, metrics address): a node may send a
#: hostname as long as an envelope, and ``ac agents`` would print it whole. Longer ones end in "...".
TEXT_MAX = 255


@dataclass(frozen=True, slots=True)
class Registration:
    """What an agent tells the controllers on every (re)connection: the body of a ``register`` envelope."""

    gid: int
    nid: int
    roles: tuple[str, ...] = ()
    hostname: str | None = None
    version: str | None = None
    pid: int | None = None
    started: int | float | None = None  # epoch seconds the agent started
    max_jobs: int | None = None
    heartbeat_interval: int | float | None = None
    metrics: str | None = None  # host:port of its metrics endpoint

    def to_wire(self) -> dict[str, Any]:
        # Spelled out: ``dataclasses.asdict`` deep-copies, a tenth of the cost of a thousand registrations.
        return {"gid": self.gid, "nid": self.nid, "roles": list(self.roles), "hostname": self.hostname,
                "version": self.version, "pid": self.pid, "started": self.started, "max_jobs": self.max_jobs,
                "heartbeat_interval": self.heartbeat_interval, "metrics": self.metrics}

    def to_json(self) -> str:
        return compact(self.to_wire())

    @classmethod
    def from_wire(cls, gid: int, nid: int, wire: dict[str, Any]) -> "Registration":
        """Agent ``gid:nid``'s registration (the name comes from where it was read, not from the body)."""
        roles = wire.get("roles")
        return cls(
            gid, nid,
            roles=tuple(role for role in roles if isinstance(role, str)) if isinstance(roles, list) else (),
            hostname=_text(wire.get("hostname")),
            version=_text(wire.get("version")),
            pid=wire.get("pid") if is_integer(wire.get("pid")) else None,
            started=number_or_none(wire.get("started")),
            max_jobs=wire.get("max_jobs") if is_integer(wire.get("max_jobs")) else None,
            heartbeat_interval=number_or_none(wire.get("heartbeat_interval")),
            metrics=_text(wire.get("metrics")),
        )

    @property
    def heartbeat_ttl(self) -> float:
        """Seconds the agent's heartbeat lives: 3 beats of the interval it registered with."""
        interval = self.heartbeat_interval
        if interval is None or not 0 < interval < 3600:
            interval = DEFAULT_HEARTBEAT_INTERVAL
        return HEARTBEAT_BEATS * interval


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The value of an agent's ``alive`` key: when it beat (epoch ms) and how many jobs it held then."""

    time: int | float | None = None
    running: int | float | None = None

    def to_json(self) -> str:
        return compact({"time": self.time, "running": self.running})

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> "Heartbeat":
        try:
            beat = json.loads(raw) if raw else {}
        except ValueError:
            beat = {}
        if not isinstance(beat, dict):
            beat = {}
        return cls(number_or_none(beat.get("time")), number_or_none(beat.get("running")))


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return value if len(value) <= TEXT_MAX else value[:TEXT_MAX - 3] + "..."
