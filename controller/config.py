"""``controller.toml``: every key is documented in ``configs/controller.toml``."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.address import DEFAULT_URL, BusAddress
from daemon.config import (
    SECURITY_SCHEMA,
    Option,
    bus_address,
    bus_url,
    check_sections,
    load_toml,
    positive,
    take_section,
)
from protocol.command import DEFAULT_MAX_DATA_BYTES

BUS_SCHEMA = {"url": Option(str, DEFAULT_URL, bus_url), "security": Option(dict, None)}
RESULTS_SCHEMA = {
    "result_ttl": Option(int, 24 * 3600, positive),
    "joblog_max": Option(int, 100_000, positive),
    "agent_log_max": Option(int, 10_000, positive),
}
ROUTING_SCHEMA = {
    "batch_size": Option(int, 256, positive),
    "max_data_bytes": Option(int, DEFAULT_MAX_DATA_BYTES, positive),
}
AGENTS_SCHEMA = {
    "sweep_interval": Option((int, float), 0.5, positive),
}


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    bus: BusAddress = field(default_factory=lambda: BusAddress.from_url(DEFAULT_URL))
    result_ttl: int = 24 * 3600
    joblog_max: int = 100_000
    agent_log_max: int = 10_000
    batch_size: int = 256
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES
    sweep_interval: float = 0.5


def load_config(path: str | Path | None, bus_override: str | None = None) -> ControllerConfig:
    """Read ``path`` (or use the defaults); ``bus_override`` replaces ``[bus] url``."""
    document: dict[str, Any] = load_toml(path) if path else {}
    check_sections(document, {"bus", "results", "routing", "agents"}, path)
    where = f"{path or 'defaults'}"
    bus = take_section(document.get("bus"), BUS_SCHEMA, f"{where} [bus]")
    security = take_section(bus["security"], SECURITY_SCHEMA, f"{where} [bus.security]")
    results = take_section(document.get("results"), RESULTS_SCHEMA, f"{where} [results]")
    routing = take_section(document.get("routing"), ROUTING_SCHEMA, f"{where} [routing]")
    agents = take_section(document.get("agents"), AGENTS_SCHEMA, f"{where} [agents]")
    return ControllerConfig(
        bus=bus_address(bus_override or bus["url"], security),
        **results,
        **routing,
        **agents,
    )
