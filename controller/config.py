"""``controller.toml``: every key is documented in ``configs/controller.toml``."""

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acbus.address import DEFAULT_URL, BusAddress
from acdaemon.config import (
    METRICS_SCHEMA,
    SECURITY_SCHEMA,
    ConfigError,
    Option,
    bus_address,
    bus_url,
    check_sections,
    load_toml,
    positive,
    take_section,
)
from protocol.command import DEFAULT_MAX_DATA_BYTES

#: Largest batch: one script call carries a batch, and Lua limits how many values one call can unpack.
MAX_BATCH_SIZE = 1000


def event_command_line(value: str) -> str | None:
    """What is wrong with an ``[events]`` command line, if anything."""
    try:
        argv = event_argv(value, 1, 1)
    except (ValueError, KeyError, IndexError) as exc:
        return f"not a usable command line ({exc!r}; placeholders: {{gid}}, {{nid}})"
    return "is blank: give a command line, or \"\" for none" if value and not argv else None


def event_argv(command_line: str, gid: int, nid: int) -> list[str]:
    """The argv of an event handler: split like a shell would (no shell runs it), placeholders filled."""
    return [part.format(gid=gid, nid=nid) for part in shlex.split(command_line)]

BUS_SCHEMA = {"url": Option(str, DEFAULT_URL, bus_url), "security": Option(dict, None)}
RESULTS_SCHEMA = {
    "result_ttl": Option(int, 24 * 3600, positive),
    "joblog_max": Option(int, 100_000, positive),
    "agent_log_max": Option(int, 10_000, positive),
    "result_queue_max": Option(int, 1000, positive),
}
ROUTING_SCHEMA = {
    "batch_size": Option(int, 256, lambda value: None if 0 < value <= MAX_BATCH_SIZE
                         else f"must be 1 to {MAX_BATCH_SIZE}"),
    "max_data_bytes": Option(int, DEFAULT_MAX_DATA_BYTES, positive),
    "takeover_after": Option((int, float), 5.0, positive),
    "route_ttl": Option((int, float), 600.0, positive),
}
AGENTS_SCHEMA = {
    "sweep_interval": Option((int, float), 0.5, positive),
    "max_envelope_bytes": Option(int, 32 * 1024 * 1024, positive),
    "outbox_max": Option(int, 100_000, positive),
    "forget_after": Option((int, float), 7 * 24 * 3600.0, positive),
}
EVENT_NAMES = ("agent_registered", "agent_returned")
EVENTS_SCHEMA = {
    **{name: Option(str, "", event_command_line) for name in EVENT_NAMES},
    "handler_timeout": Option((int, float), 30.0, positive),
}


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """A checked ``controller.toml`` (every key is documented in ``configs/controller.toml``)."""

    bus: BusAddress = field(default_factory=lambda: BusAddress.from_url(DEFAULT_URL))
    result_ttl: int = 24 * 3600
    joblog_max: int = 100_000
    agent_log_max: int = 10_000
    result_queue_max: int = 1000
    batch_size: int = 256
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES
    takeover_after: float = 5.0
    route_ttl: float = 600.0
    sweep_interval: float = 0.5
    max_envelope_bytes: int = 32 * 1024 * 1024
    outbox_max: int = 100_000
    forget_after: float = 7 * 24 * 3600.0
    agent_registered: str = ""
    agent_returned: str = ""
    handler_timeout: float = 30.0
    metrics_listen: str = ""

    def event_handler(self, event: str) -> str:
        """The command line configured for ``event`` ("" when none)."""
        return getattr(self, event) if event in EVENT_NAMES else ""


def load_config(path: str | Path | None, bus_override: str | None = None) -> ControllerConfig:
    """Read ``path`` (or use the defaults); ``bus_override`` replaces ``[bus] url``."""
    document: dict[str, Any] = load_toml(path) if path else {}
    check_sections(document, {"bus", "results", "routing", "agents", "events", "metrics"}, path)
    where = f"{path or 'defaults'}"
    bus = take_section(document.get("bus"), BUS_SCHEMA, f"{where} [bus]")
    security = take_section(bus["security"], SECURITY_SCHEMA, f"{where} [bus.security]")
    results = take_section(document.get("results"), RESULTS_SCHEMA, f"{where} [results]")
    routing = take_section(document.get("routing"), ROUTING_SCHEMA, f"{where} [routing]")
    agents = take_section(document.get("agents"), AGENTS_SCHEMA, f"{where} [agents]")
    events = take_section(document.get("events"), EVENTS_SCHEMA, f"{where} [events]")
    metrics = take_section(document.get("metrics"), METRICS_SCHEMA, f"{where} [metrics]")
    if routing["takeover_after"] < 2 * agents["sweep_interval"]:
        raise ConfigError(f"{where} [routing] takeover_after: must be at least twice [agents] sweep_interval "
                          f"({agents['sweep_interval']}), got {routing['takeover_after']!r}")
    return ControllerConfig(
        bus=bus_address(bus_override or bus["url"], security),
        **results,
        **routing,
        **agents,
        **events,
        metrics_listen=metrics["listen"],
    )
