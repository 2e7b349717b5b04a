"""``agent2.toml``, strictly checked: see ``configs/agent2.toml`` for every key.

Relative paths are taken relative to the folder of the config file, so a
config and its data can move together.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acbus.address import BusAddress
from acdaemon.config import (
    METRICS_SCHEMA,
    SECURITY_SCHEMA,
    WAIT_SCHEMA,
    ConfigError,
    Option,
    bus_address,
    bus_url,
    check_sections,
    list_of_strings,
    load_toml,
    positive,
    take_section,
)
from agent.launch import Extension, template_fields
from protocol.command import RunArgs
from protocol.errors import ProtocolError
from protocol.levels import ALL_LEVELS, parse_levels


def non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


MAIN_SCHEMA = {
    "gid": Option(int, check=positive),
    "nid": Option(int, check=positive),
    "max_jobs": Option(int, 100, positive),
    "message_id_file": Option(str, "message.id", non_empty),
    "history_file": Option(str, "history.db", non_empty),
    "roles": Option(list, [], list_of_strings),
    "heartbeat_interval": Option((int, float), 2.0, positive),
    "kill_grace": Option((int, float), 5.0, positive),
}
CONTROLLER_SCHEMA = {"url": Option(str, check=bus_url), "security": Option(dict, None), **WAIT_SCHEMA}
CHANNEL_SCHEMA = {"cmds": Option(list, [], list_of_strings)}
EXTENSION_SCHEMA = {
    "binary": Option(str, check=non_empty),
    "cwd": Option(str, ""),
    "args": Option(list, [], list_of_strings),
    "env": Option(dict, {}),
}
LOGGER_TYPES = ("DB", "AC", "console")
LOGGER_SCHEMAS = {
    "DB": {"type": Option(str), "log_dir": Option(str, check=non_empty), "levels": Option((str, list), "*"),
           "max_bytes": Option(int, 256 * 1024 * 1024, positive), "max_age": Option(int, 7 * 24 * 3600, positive)},
    "AC": {"type": Option(str), "flush_int": Option((int, float), 1.0, positive),
           "batch_size": Option(int, 1000, positive), "controllers": Option(list, [], list_of_strings),
           "levels": Option((str, list), "*")},
    "console": {"type": Option(str), "levels": Option((str, list), "*")},
}
STATS_SCHEMA = {"interval": Option((int, float), 60, positive), "controllers": Option(list, [], list_of_strings)}
STARTUP_SCHEMA = {"name": Option(str), "data": Option(str, ""), "args": Option(dict, {})}
SECTIONS = {"main", "controllers", "channel", "extensions", "logging", "stats", "startup", "metrics"}


@dataclass(frozen=True, slots=True)
class Logger:
    """One ``[logging.<name>]``: its type, levels and the settings of that type."""

    name: str
    type: str
    levels: frozenset[int]
    log_dir: str = ""
    max_bytes: int = 0
    max_age: int = 0
    flush_int: float = 1.0
    batch_size: int = 1000
    controllers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StartupJob:
    """One ``[startup.<id>]``: a job run once at each start, with job id ``<id>``."""

    id: str
    cmd: str
    data: str
    args: RunArgs


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """A checked ``agent2.toml`` (every key is documented in ``configs/agent2.toml``)."""

    path: Path
    gid: int
    nid: int
    roles: tuple[str, ...]
    max_jobs: int
    heartbeat_interval: float
    kill_grace: float
    message_id_file: Path
    history_file: Path
    controllers: dict[str, BusAddress]
    channel_cmds: tuple[str, ...]
    extensions: dict[str, Extension] = field(default_factory=dict)
    loggers: tuple[Logger, ...] = ()
    stats_interval: float = 60
    stats_controllers: tuple[str, ...] = ()
    startup: tuple[StartupJob, ...] = ()
    metrics_listen: str = ""

    @property
    def home(self) -> Path:
        """The folder of the config file: ``AGENT_HOME`` for jobs, base of relative paths."""
        return self.path.parent

    @property
    def bus(self) -> BusAddress:
        """The bus commands come from: the first controller of ``[channel] cmds`` (or of all)."""
        name = self.channel_cmds[0] if self.channel_cmds else next(iter(self.controllers))
        return self.controllers[name]


def load_config(path: str | Path) -> AgentConfig:
    path = Path(path).resolve()
    document = load_toml(path)
    check_sections(document, SECTIONS, path)
    if "main" not in document:
        raise ConfigError(f"{path}: missing section [main]")
    main = take_section(document["main"], MAIN_SCHEMA, f"{path} [main]")
    controllers = _controllers(document.get("controllers"), path)
    channel = take_section(document.get("channel"), CHANNEL_SCHEMA, f"{path} [channel]")
    for name in channel["cmds"]:
        if name not in controllers:
            raise ConfigError(f"{path} [channel] cmds: no controller {name!r} (configured: {', '.join(controllers)})")
    stats = take_section(document.get("stats"), STATS_SCHEMA, f"{path} [stats]")
    loggers = _loggers(document.get("logging"), path, controllers) if "logging" in document else \
        _default_loggers(path)
    _check_controller_names(stats["controllers"], controllers, f"{path} [stats] controllers")
    extensions = _extensions(document.get("extensions"), path)
    metrics = take_section(document.get("metrics"), METRICS_SCHEMA, f"{path} [metrics]")
    return AgentConfig(
        path=path,
        gid=main["gid"],
        nid=main["nid"],
        roles=tuple(main["roles"]),
        max_jobs=main["max_jobs"],
        heartbeat_interval=float(main["heartbeat_interval"]),
        kill_grace=float(main["kill_grace"]),
        message_id_file=path.parent / main["message_id_file"],
        history_file=path.parent / main["history_file"],
        controllers=controllers,
        channel_cmds=tuple(channel["cmds"]),
        extensions=extensions,
        loggers=loggers,
        stats_interval=float(stats["interval"]),
        stats_controllers=tuple(stats["controllers"]),
        startup=_startup(document.get("startup"), path, extensions),
        metrics_listen=metrics["listen"],
    )


def _tables(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(table, dict) for table in value.values()):
        raise ConfigError(f"{where}: expected sub-tables like [{where.rsplit('[', 1)[-1].rstrip(']')}.<name>]")
    return value


def _controllers(value: object, path: Path) -> dict[str, BusAddress]:
    tables = _tables(value, f"{path} [controllers]")
    if not tables:
        raise ConfigError(f"{path}: missing section [controllers.<name>] with the bus url")
    controllers = {}
    for name, table in tables.items():
        where = f"{path} [controllers.{name}]"
        checked = take_section(table, CONTROLLER_SCHEMA, where)
        security = take_section(checked["security"], SECURITY_SCHEMA, f"{path} [controllers.{name}.security]")
        controllers[name] = bus_address(checked["url"], _resolve_files(security, path),
                                        {key: checked[key] for key in WAIT_SCHEMA})
    return controllers


def _resolve_files(security: dict[str, Any], path: Path) -> dict[str, Any]:
    files = ("client_certificate", "client_certificate_key", "certificate_authority")
    return {key: str(path.parent / value) if key in files and value else value for key, value in security.items()}


def _extensions(value: object, path: Path) -> dict[str, Extension]:
    extensions = {}
    for name, table in _tables(value, f"{path} [extensions]").items():
        where = f"{path} [extensions.{name}]"
        checked = take_section(table, EXTENSION_SCHEMA, where)
        env = checked["env"]
        if not all(isinstance(item, str) for item in env.values()):
            raise ConfigError(f"{where} env: values must be strings")
        for template in checked["args"]:
            try:
                template_fields(template)
            except ValueError as exc:
                raise ConfigError(f"{where} args: {exc}") from None
        cwd = str(path.parent / checked["cwd"]) if checked["cwd"] else ""
        extensions[name] = Extension(name, checked["binary"], cwd, tuple(checked["args"]), dict(env))
    return extensions


def _loggers(value: object, path: Path, controllers: dict[str, BusAddress]) -> tuple[Logger, ...]:
    loggers = []
    for name, table in _tables(value, f"{path} [logging]").items():
        where = f"{path} [logging.{name}]"
        kind = table.get("type")
        if kind not in LOGGER_TYPES:
            raise ConfigError(f"{where} type: expected one of {', '.join(LOGGER_TYPES)}, got {kind!r}")
        checked = take_section(table, LOGGER_SCHEMAS[kind], where)
        checked["levels"] = _logger_levels(checked["levels"], where)
        if kind == "DB":
            checked["log_dir"] = str(path.parent / checked["log_dir"])
        if kind == "AC":
            _check_controller_names(checked["controllers"], controllers, f"{where} controllers")
            checked["controllers"] = tuple(checked["controllers"])
        loggers.append(Logger(name=name, **checked))
    return tuple(loggers)


def _logger_levels(value: str | list, where: str) -> frozenset[int]:
    """A logger's levels; empty (``[]`` or ``""``) means every level, as in the 2015 agent2.toml."""
    if not (value.strip() if isinstance(value, str) else value):
        return ALL_LEVELS
    try:
        return parse_levels(value, "levels")
    except ProtocolError as exc:
        raise ConfigError(f"{where} {exc}") from None


def _default_loggers(path: Path) -> tuple[Logger, ...]:
    """Without a [logging] section: every message in a DB in ``logs/``, warnings and errors on the console."""
    db = LOGGER_SCHEMAS["DB"]
    return (Logger("db", "DB", ALL_LEVELS, log_dir=str(path.parent / "logs"), max_bytes=db["max_bytes"].default,
                   max_age=db["max_age"].default),
            Logger("console", "console", parse_levels("7-9")))


def _startup(value: object, path: Path, extensions: dict[str, Extension]) -> tuple[StartupJob, ...]:
    jobs = []
    for job_id, table in _tables(value, f"{path} [startup]").items():
        where = f"{path} [startup.{job_id}]"
        checked = take_section(table, STARTUP_SCHEMA, where)
        if checked["name"] != "execute" and checked["name"] not in extensions:
            raise ConfigError(f"{where} name: {checked['name']!r} is not a command a startup job can run "
                              f"(execute or an extension: {', '.join(['execute', *extensions])})")
        try:
            args = RunArgs.from_wire(checked["args"])
        except ProtocolError as exc:
            raise ConfigError(f"{where} {exc}") from None
        jobs.append(StartupJob(job_id, checked["name"], checked["data"], args))
    return tuple(jobs)


def _check_controller_names(names: list[str], controllers: dict[str, BusAddress], where: str) -> None:
    for name in names:
        if name not in controllers:
            raise ConfigError(f"{where}: no controller {name!r} (configured: {', '.join(controllers)})")


def swarm_member(config: AgentConfig, index: int) -> AgentConfig:
    """Identity ``index`` of a swarm (``ac-agent --swarm K``): node ``nid + index`` of the same grid.

    Member 0 is the configured agent itself. The others keep their own files
    under ``<home>/swarm/<gid>-<nid>/``, so no two identities share a message
    id counter, a history or a message DB; only member 0 serves ``[metrics]``.
    """
    if index == 0:
        return config
    nid = config.nid + index
    folder = config.home / "swarm" / f"{config.gid}-{nid}"
    loggers = tuple(dataclasses.replace(logger, log_dir=str(folder / f"db-{logger.name}")) if logger.log_dir else logger
                    for logger in config.loggers)
    return dataclasses.replace(config, nid=nid, message_id_file=folder / config.message_id_file.name,
                               history_file=folder / config.history_file.name, loggers=loggers, metrics_listen="")
