"""Commands as clients send them: validation that names the bad field.

A command is checked twice: by the controller before routing (so the client
hears at once what was wrong) and by the agent before running it (an agent
trusts nothing it reads from the bus).
"""

import json
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ProtocolError, shown, type_name
from protocol.fields import (
    check_count,
    check_name,
    check_non_negative,
    check_number,
    check_string,
    check_string_list,
    is_integer,
)
from protocol.jsontext import compact
from protocol.levels import parse_levels
from protocol.targets import Rollout, check_hosts, check_queued, check_ttl, parse_agents

MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 256
MAX_NODE_NUMBER = 2**31 - 1
#: Default cap on ``data``; the controller's ``max_data_bytes`` overrides it.
DEFAULT_MAX_DATA_BYTES = 16 * 1024 * 1024
#: ``max_time`` of a long-running job: persisted and restarted with the agent.
LONG_RUNNING = -1
ANY_ROLE = "*"
#: ``cmd`` of the commands the controller answers itself; they need no target.
CONTROLLER_CMD = "controller"


class MalformedCommand(ProtocolError):
    """A command that cannot be routed or run.

    ``command_id`` is set when the input had a usable id, so the sender can be
    answered with an ``ERROR`` job; ``fields`` holds whatever parsed, to echo
    back in that job.
    """

    def __init__(self, error: ProtocolError, command_id: str | None, fields: dict[str, Any]) -> None:
        super().__init__(error.field, error.problem)
        self.command_id = command_id
        self.fields = fields


@dataclass(frozen=True, slots=True)
class RunArgs:
    """How to run a command. ``None`` means unset; only set keys go on the wire."""

    domain: str | None = None
    name: str | None = None
    args: tuple[str, ...] | None = None
    max_time: float | None = None
    max_restart: int | None = None
    recurring_period: float | None = None
    stats_interval: float | None = None
    loglevels: Any = None
    loglevels_db: Any = None
    loglevels_ac: Any = None
    queue: str | None = None
    working_dir: str | None = None
    env: dict[str, str] | None = None

    @classmethod
    def from_wire(cls, value: object, prefix: str = "args") -> "RunArgs":
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ProtocolError(prefix, f"expected an object, got {type_name(value)}")
        unknown = sorted(set(value) - set(cls.__slots__))
        if unknown:
            raise ProtocolError(f"{prefix}.{unknown[0]}", "unknown run argument")
        checked: dict[str, Any] = {}
        for key, raw in value.items():
            if raw is not None:
                checked[key] = _RUN_ARG_CHECKS[key](raw, f"{prefix}.{key}")
        return cls(**checked)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        for key in self.__slots__:
            value = getattr(self, key)
            if value is not None:
                wire[key] = list(value) if key == "args" else value
        return wire

    def replace(self, **changes: Any) -> "RunArgs":
        """A copy with ``changes`` applied and validated."""
        merged = self.to_wire()
        merged.update(changes)
        return RunArgs.from_wire(merged)

    def levels(self) -> frozenset[int] | None:
        return None if self.loglevels is None else parse_levels(self.loglevels, "args.loglevels")

    def levels_db(self) -> frozenset[int] | None:
        return None if self.loglevels_db is None else parse_levels(self.loglevels_db, "args.loglevels_db")

    def levels_ac(self) -> frozenset[int] | None:
        return None if self.loglevels_ac is None else parse_levels(self.loglevels_ac, "args.loglevels_ac")


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command. ``gid``/``nid`` 0 mean unset; ``roles`` empty means none. The fields after
    ``tags`` choose targets beyond 2015 (``protocol/targets.py``)."""

    id: str
    cmd: str
    gid: int = 0
    nid: int = 0
    roles: tuple[str, ...] = ()
    fanout: bool = False
    args: RunArgs = field(default_factory=RunArgs)
    data: str = ""
    tags: str | None = None
    targets: tuple[tuple[int, int], ...] = ()
    exclude: tuple[tuple[int, int], ...] = ()
    hosts: str | None = None
    rollout: Rollout | None = None
    ttl: float | None = None
    queued: int | None = None
    result_ttl: int | None = None  # seconds its results are kept after their last update (at most the controller's)

    @property
    def fans_out(self) -> bool:
        """Whether it goes to every agent it selects (a fanout, or a list of targets)."""
        return self.fanout or bool(self.targets)

    @property
    def role(self) -> str | None:
        """The 2015 single-role spelling (the first role)."""
        return self.roles[0] if self.roles else None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "id": self.id,
            "gid": self.gid or None,
            "nid": self.nid or None,
            "role": self.role if len(self.roles) <= 1 else None,
            "fanout": self.fanout,
            "cmd": self.cmd,
            "args": self.args.to_wire(),
            "data": self.data,
        }
        if len(self.roles) > 1:
            wire["roles"] = list(self.roles)
        if self.tags is not None:
            wire["tags"] = self.tags
        if self.targets:
            wire["targets"] = [f"{gid}:{nid}" for gid, nid in self.targets]
        if self.exclude:
            wire["exclude"] = [f"{gid}:{nid}" for gid, nid in self.exclude]
        for name in ("hosts", "ttl", "queued", "result_ttl"):
            if getattr(self, name) is not None:
                wire[name] = getattr(self, name)
        if self.rollout is not None:
            wire["rollout"] = self.rollout.to_wire()
        return wire

    def to_json(self) -> str:
        return compact(self.to_wire())


def decode_command(raw: bytes | str, max_data_bytes: int = DEFAULT_MAX_DATA_BYTES) -> Command:
    """Parse and validate one command JSON.

    Raises ``MalformedCommand`` naming the first bad field.
    """
    try:
        fields = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedCommand(ProtocolError("", f"not valid JSON: {exc}"), None, {}) from None
    except RecursionError:
        raise MalformedCommand(ProtocolError("", "not valid JSON: nested too deeply"), None, {}) from None
    if not isinstance(fields, dict):
        error = ProtocolError("", f"expected a JSON object, got {type_name(fields)}")
        raise MalformedCommand(error, None, {})
    command_id = usable_id(fields.get("id"))
    try:
        if command_id is None:
            command_id = _check_id(fields.get("id"))  # raises: usable_id found no usable id
        return _command_from_fields(fields, command_id, max_data_bytes)
    except ProtocolError as exc:
        raise MalformedCommand(exc, command_id, fields) from None


def usable_id(value: object) -> str | None:
    """The command id if it is one a reply can be addressed to, else ``None``."""
    try:
        return _check_id(value)
    except ProtocolError:
        return None


def check_path_component(value: str, field: str) -> str:
    """Refuse a script ``domain``/``name`` that could leave its folder."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value or ".." in value:
        raise ProtocolError(field, f"{shown(value)} is not allowed here: no '/', '..' or NUL")
    return value


def _command_from_fields(fields: dict[str, Any], command_id: str, max_data_bytes: int) -> Command:
    gid = _optional_node_number(fields.get("gid"), "gid")
    nid = _optional_node_number(fields.get("nid"), "nid")
    roles = _roles(fields.get("role"), fields.get("roles"))
    fanout = fields.get("fanout")
    if fanout is None:
        fanout = False
    elif not isinstance(fanout, bool):
        raise ProtocolError("fanout", f"expected true or false, got {type_name(fanout)}")
    cmd = fields.get("cmd")
    if cmd is None:
        raise ProtocolError("cmd", "missing")
    check_name(cmd, "cmd", MAX_NAME_LENGTH)
    data = fields.get("data")
    if data is None:
        data = ""
    elif not isinstance(data, str):
        raise ProtocolError("data", f"expected a string (JSON-encode objects first), got {type_name(data)}")
    if len(data) * 4 > max_data_bytes:  # cheap test first: a character is at most 4 bytes
        size = len(data.encode("utf-8", "surrogatepass"))
        if size > max_data_bytes:
            raise ProtocolError("data", f"{size} bytes exceeds the limit of {max_data_bytes}")
    tags = fields.get("tags")
    if tags is not None and not isinstance(tags, str):
        raise ProtocolError("tags", f"expected a string, got {type_name(tags)}")
    selection = _selection(fields)
    _check_target(gid, nid, roles, fanout, selection, internal=cmd == CONTROLLER_CMD)
    args = RunArgs.from_wire(fields.get("args"))
    result_ttl = fields.get("result_ttl")
    return Command(command_id, cmd, gid, nid, roles, fanout, args, data, tags, **selection,
                   result_ttl=None if result_ttl is None else check_result_ttl(result_ttl))


def check_result_ttl(value: object, field: str = "result_ttl") -> int:
    """Seconds a command's results are kept after their last update: whole seconds > 0."""
    if not is_integer(value) or value < 1:
        raise ProtocolError(field, f"expected whole seconds > 0, got {shown(value)}")
    return value


def check_target(command: Command) -> None:
    """Whether ``command`` says where it goes in a way the controller can route (``ProtocolError`` if not)."""
    selection = {name: getattr(command, name) for name in ("targets", "exclude", "hosts", "rollout")
                 if getattr(command, name)}
    _check_target(command.gid, command.nid, command.roles, command.fanout, selection,
                  internal=command.cmd == CONTROLLER_CMD)


def _selection(fields: dict[str, Any]) -> dict[str, Any]:
    """The targeting fields beyond 2015 (``protocol/targets.py``), those that are set."""
    chosen: dict[str, Any] = {}
    for name, parse in (("targets", parse_agents), ("exclude", parse_agents), ("hosts", check_hosts),
                        ("rollout", Rollout.from_wire), ("ttl", check_ttl), ("queued", check_queued)):
        if fields.get(name) is not None:
            chosen[name] = parse(fields[name], name)
    return chosen


def _check_target(gid: int, nid: int, roles: tuple[str, ...], fanout: bool, selection: dict[str, Any],
                  internal: bool) -> None:
    targets, hosts = selection.get("targets"), selection.get("hosts")
    if targets:
        for name, given in (("gid", gid), ("nid", nid), ("role", roles)):
            if given:
                raise ProtocolError(name, "targets names its agents: give no gid, nid or role beside it")
    if nid and roles:
        raise ProtocolError("nid", "a command goes to one node (gid and nid) or to a role, not both")
    if nid and not gid:
        raise ProtocolError("gid", "missing: nid needs a gid")
    if nid and (hosts or selection.get("exclude")):
        raise ProtocolError("hosts" if hosts else "exclude", "a command to one node (gid and nid) chooses no "
                            "others: give a role, targets or hosts to choose from")
    if selection.get("exclude") and not (roles or targets or hosts):
        raise ProtocolError("exclude", "excludes agents of a role, targets or hosts: give one of them")
    many = roles or targets or hosts
    if fanout and not many:
        raise ProtocolError("fanout", "fanout needs a role, targets or hosts")
    if selection.get("rollout") and not (fanout or targets):
        raise ProtocolError("rollout", "a rollout starts the targets of a fanout in waves: give fanout (or "
                            "targets)")
    if not nid and not many and not internal:
        raise ProtocolError("nid", "no target: give gid and nid, a role, targets or hosts")


def _check_id(value: object) -> str:
    if value is None:
        raise ProtocolError("id", "missing")
    if not isinstance(value, str):
        raise ProtocolError("id", f"expected a string, got {type_name(value)}")
    if not value or len(value) > MAX_ID_LENGTH:
        raise ProtocolError("id", f"must be 1 to {MAX_ID_LENGTH} characters, got {len(value)}")
    if not value.isprintable():
        raise ProtocolError("id", "contains control characters")
    return value


def _optional_node_number(value: object, field: str) -> int:
    if value is None:
        return 0
    if not is_integer(value):
        raise ProtocolError(field, f"expected a positive integer or null, got {type_name(value)}")
    if not 0 <= value <= MAX_NODE_NUMBER:
        raise ProtocolError(field, f"{value} is out of range 1-{MAX_NODE_NUMBER}")
    return value


def _roles(role: object, roles: object) -> tuple[str, ...]:
    if role is not None and roles is not None:
        raise ProtocolError("roles", "give either role or roles, not both")
    if role is not None:
        return (check_name(role, "role", MAX_NAME_LENGTH),)
    if roles is None:
        return ()
    if not isinstance(roles, list) or not roles:
        raise ProtocolError("roles", "expected a non-empty list of strings")
    return tuple(check_name(item, f"roles[{index}]", MAX_NAME_LENGTH) for index, item in enumerate(roles))



def _max_time(value: object, field: str) -> float:
    value = check_number(value, field)
    if value < 0 and value != LONG_RUNNING:
        raise ProtocolError(field, f"{value} is not allowed: use 0 (no limit), -1 (long-running) or seconds > 0")
    return value




def _level_spec(value: object, field: str) -> object:
    parse_levels(value, field)
    return list(value) if isinstance(value, tuple | set | frozenset) else value


def _environment(value: object, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ProtocolError(field, f"expected an object of strings, got {type_name(value)}")
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            raise ProtocolError(f"{field}.{key}", "not a valid environment variable name")
        if not isinstance(item, str) or "\0" in item:
            raise ProtocolError(f"{field}.{key}", f"expected a string without NUL, got {type_name(item)}")
    return dict(value)


_RUN_ARG_CHECKS = {
    "domain": check_string,
    "name": check_string,
    "args": check_string_list,
    "max_time": _max_time,
    "max_restart": check_count,
    "recurring_period": check_non_negative,
    "stats_interval": check_non_negative,
    "loglevels": _level_spec,
    "loglevels_db": _level_spec,
    "loglevels_ac": _level_spec,
    "queue": check_string,
    "working_dir": check_string,
    "env": _environment,
}
