"""Commands the agent answers itself, without starting a process.

Each handler takes the node (``Node``: the little of the agent a built-in may
use) and the command, and returns the result (any JSON value), which the
agent reports as a level-20 JSON ``SUCCESS``; raising ``BuiltinError`` (or
``ProtocolError``, for a bad field of ``data``) reports an ``ERROR`` with the
message instead. A full agent (``max_jobs``) never delays them. Handlers
that return at once (``Builtin.inline``) are answered right where the
command is dispatched; the others run as a task, and anything blocking in a
worker thread. Result shapes are in ``docs/builtins.md``.
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from agent import sysinfo
from agent.messagedb import MAX_QUERY_LIMIT, MessageQuery
from protocol.command import Command
from protocol.errors import SHOWN_CHARS, ProtocolError, bounded, shown, type_name
from protocol.fields import check_count, check_number, check_object, check_string
from protocol.levels import ALL_LEVELS, parse_levels

#: Messages ``get_msgs`` answers when no limit is given (the 2015 client's default).
DEFAULT_LIMIT = 20


class BuiltinError(Exception):
    """A built-in command that cannot be answered; the message says why."""


class MessageDB(Protocol):
    """What ``get_msgs`` needs of the message DB."""

    async def query(self, query: MessageQuery) -> list[dict[str, Any]]: ...


class JobStats(Protocol):
    """What the stats built-ins need of the agent's stats."""

    async def process_stats(self, job_id: str) -> dict[str, Any] | None: ...

    def processes_stats(self, domain: str | None = None, name: str | None = None) -> list[dict[str, Any]]: ...

    def aggregated(self) -> dict[str, Any]: ...


class Node(Protocol):
    """What a built-in may see and do of its agent."""

    @property
    def stats(self) -> JobStats: ...

    @property
    def message_db(self) -> MessageDB | None: ...

    def kill_job(self, job_id: str) -> bool: ...

    def kill_all(self) -> list[str]: ...

    def restart(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Builtin:
    """A built-in's handler: ``inline`` ones (plain functions) answer at once, the others are awaited in a task."""

    handler: Callable[[Node, Command], Any]
    inline: bool


def ping(node: Node, command: Command) -> str:
    return "pong"


def _in_thread(function: Callable[[], Any]) -> Callable[[Node, Command], Awaitable[Any]]:
    async def handler(node: Node, command: Command) -> Any:
        return await trio.to_thread.run_sync(function)

    handler.__doc__ = function.__doc__
    return handler


async def get_process_stats(node: Node, command: Command) -> dict[str, Any]:
    job_id = check_string(_data(command, {"id"}, required={"id"})["id"], "data.id")
    stats = await node.stats.process_stats(job_id)
    if stats is None:
        raise BuiltinError(f"job {shown(job_id)} is not running on this agent")
    return stats


def get_processes_stats(node: Node, command: Command) -> list[dict[str, Any]]:
    data = _data(command, {"domain", "name"})
    return node.stats.processes_stats(_optional_string(data, "domain"), _optional_string(data, "name"))


def get_aggregated_stats(node: Node, command: Command) -> dict[str, Any]:
    return node.stats.aggregated()


async def get_msgs(node: Node, command: Command) -> list[dict[str, Any]]:
    data = _data(command, {"jobid", "timefrom", "timeto", "levels", "limit"})
    database = node.message_db
    if database is None:
        raise BuiltinError("this agent keeps no messages: it has no [logging.<name>] of type DB")
    levels = parse_levels("*" if data.get("levels") is None else data["levels"], "data.levels")
    limit = DEFAULT_LIMIT if data.get("limit") is None else check_count(data["limit"], "data.limit")
    query = MessageQuery(jobid=_optional_string(data, "jobid"), timefrom=_optional_time(data, "timefrom"),
                         timeto=_optional_time(data, "timeto"), levels=None if levels == ALL_LEVELS else levels,
                         limit=min(limit, MAX_QUERY_LIMIT))
    return await database.query(query)


def kill(node: Node, command: Command) -> dict[str, Any]:
    job_id = check_string(_data(command, {"id"}, required={"id"})["id"], "data.id")
    if not node.kill_job(job_id):
        raise BuiltinError(f"no job {shown(job_id)} on this agent")
    return {"killed": [job_id]}


def killall(node: Node, command: Command) -> dict[str, Any]:
    return {"killed": node.kill_all()}


def restart(node: Node, command: Command) -> str:
    node.restart()
    return "restarting"


BUILTINS: dict[str, Builtin] = {
    "ping": Builtin(ping, inline=True),
    "get_cpu_info": Builtin(_in_thread(sysinfo.cpu_info), inline=False),
    "get_mem_info": Builtin(_in_thread(sysinfo.mem_info), inline=False),
    "get_disk_info": Builtin(_in_thread(sysinfo.disk_info), inline=False),
    "get_nic_info": Builtin(_in_thread(sysinfo.nic_info), inline=False),
    "get_os_info": Builtin(_in_thread(sysinfo.os_info), inline=False),
    "get_process_stats": Builtin(get_process_stats, inline=False),
    "get_processes_stats": Builtin(get_processes_stats, inline=True),
    "get_aggregated_stats": Builtin(get_aggregated_stats, inline=True),
    "get_msgs": Builtin(get_msgs, inline=False),
    "kill": Builtin(kill, inline=True),
    "killall": Builtin(killall, inline=True),
    "restart": Builtin(restart, inline=True),
}


def _data(command: Command, known: set[str], required: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The command's ``data`` as a JSON object with only ``known`` keys."""
    if not command.data.strip():
        value: Any = {}
    else:
        try:
            value = json.loads(command.data)
        except ValueError:
            raise ProtocolError("data", f"expected a JSON object, got {shown(command.data)}") from None
    value = check_object({} if value is None else value, "data")
    unknown = sorted(set(value) - known)
    if unknown:
        raise ProtocolError(f"data.{bounded(unknown[0], SHOWN_CHARS)}",
                            f"unknown key (known: {', '.join(sorted(known))})")
    for key in sorted(required):
        if value.get(key) is None:
            raise ProtocolError(f"data.{key}", "missing")
    return value


def _optional_string(data: dict[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else check_string(data[key], f"data.{key}")


def _optional_time(data: dict[str, Any], key: str) -> float | None:
    if data.get(key) is None:
        return None
    try:
        return check_number(data[key], f"data.{key}")
    except ProtocolError:
        raise ProtocolError(f"data.{key}", f"expected epoch seconds, got {type_name(data[key])}") from None
