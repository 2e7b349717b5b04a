"""Commands the agent answers itself, without starting a process.

Each handler takes the agent and the command and returns the result (any
JSON value), which the agent reports as a level-20 JSON ``SUCCESS``; raising
``BuiltinError`` reports an ``ERROR`` with the message instead. Handlers run
as soon as their command arrives: a full agent (``max_jobs``) never delays
them, and anything blocking runs in a worker thread. Result shapes are in
``docs/builtins.md``.
"""

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from agent import sysinfo
from agent.messagedb import MAX_QUERY_LIMIT, MessageQuery
from protocol.command import Command
from protocol.errors import SHOWN_CHARS, ProtocolError, bounded, shown, type_name
from protocol.levels import ALL_LEVELS, parse_levels

if TYPE_CHECKING:
    from agent.service import Agent


#: Messages ``get_msgs`` answers when no limit is given (the 2015 client's default).
DEFAULT_LIMIT = 20


class BuiltinError(Exception):
    """A built-in command that cannot be answered; the message says why."""


Builtin = Callable[["Agent", Command], Awaitable[Any]]


async def ping(agent: "Agent", command: Command) -> str:
    return "pong"


def _in_thread(function: Callable[[], Any]) -> Builtin:
    async def handler(agent: "Agent", command: Command) -> Any:
        return await trio.to_thread.run_sync(function)

    handler.__doc__ = function.__doc__
    return handler


async def get_process_stats(agent: "Agent", command: Command) -> dict[str, Any]:
    job_id = _string(_data(command, {"id"}, required={"id"}), "id")
    stats = await agent.stats.process_stats(job_id)
    if stats is None:
        raise BuiltinError(f"job {shown(job_id)} is not running on this agent")
    return stats


async def get_processes_stats(agent: "Agent", command: Command) -> list[dict[str, Any]]:
    data = _data(command, {"domain", "name"})
    return agent.stats.processes_stats(_string(data, "domain", None), _string(data, "name", None))


async def get_aggregated_stats(agent: "Agent", command: Command) -> dict[str, Any]:
    return agent.stats.aggregated()


async def get_msgs(agent: "Agent", command: Command) -> list[dict[str, Any]]:
    data = _data(command, {"jobid", "timefrom", "timeto", "levels", "limit"})
    database = agent.loggers.database
    if database is None:
        raise BuiltinError("this agent keeps no messages: it has no [logging.<name>] of type DB")
    levels = data.get("levels")
    try:
        levels = parse_levels("*" if levels is None else levels, "data.levels")
    except ProtocolError as exc:
        raise BuiltinError(str(exc)) from None
    limit = data.get("limit")
    limit = DEFAULT_LIMIT if limit is None else limit
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise BuiltinError(f"data.limit: expected a whole number 0-{MAX_QUERY_LIMIT}, got {shown(limit)}")
    query = MessageQuery(jobid=_string(data, "jobid", None), timefrom=_time(data, "timefrom"),
                         timeto=_time(data, "timeto"), levels=None if levels == ALL_LEVELS else levels,
                         limit=min(limit, MAX_QUERY_LIMIT))
    return await database.query(query)


async def kill(agent: "Agent", command: Command) -> dict[str, Any]:
    job_id = _string(_data(command, {"id"}, required={"id"}), "id")
    if not agent.kill_job(job_id):
        raise BuiltinError(f"no job {shown(job_id)} on this agent")
    return {"killed": [job_id]}


async def killall(agent: "Agent", command: Command) -> dict[str, Any]:
    return {"killed": agent.kill_all()}


async def restart(agent: "Agent", command: Command) -> str:
    agent.stop(restart=True)
    return "restarting"


BUILTINS: dict[str, Builtin] = {
    "ping": ping,
    "get_cpu_info": _in_thread(sysinfo.cpu_info),
    "get_mem_info": _in_thread(sysinfo.mem_info),
    "get_disk_info": _in_thread(sysinfo.disk_info),
    "get_nic_info": _in_thread(sysinfo.nic_info),
    "get_os_info": _in_thread(sysinfo.os_info),
    "get_process_stats": get_process_stats,
    "get_processes_stats": get_processes_stats,
    "get_aggregated_stats": get_aggregated_stats,
    "get_msgs": get_msgs,
    "kill": kill,
    "killall": killall,
    "restart": restart,
}


def _data(command: Command, known: set[str], required: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The command's ``data`` as a JSON object with only ``known`` keys."""
    if not command.data.strip():
        value: Any = {}
    else:
        try:
            value = json.loads(command.data)
        except ValueError:
            raise BuiltinError(f"data: expected a JSON object, got {shown(command.data)}") from None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise BuiltinError(f"data: expected a JSON object, got {type_name(value)}")
    unknown = sorted(set(value) - known)
    if unknown:
        raise BuiltinError(f"data.{bounded(unknown[0], SHOWN_CHARS)}: unknown key (known: {', '.join(sorted(known))})")
    for key in sorted(required):
        if value.get(key) is None:
            raise BuiltinError(f"data.{key}: missing")
    return value


_MISSING: Any = object()


def _string(data: dict[str, Any], key: str, default: Any = _MISSING) -> Any:
    value = data.get(key)
    if value is None and default is not _MISSING:
        return default
    if not isinstance(value, str):
        raise BuiltinError(f"data.{key}: expected a string, got {type_name(value)}")
    return value


def _time(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BuiltinError(f"data.{key}: expected epoch seconds, got {type_name(value)}")
    return value
