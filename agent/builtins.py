"""Commands the agent answers itself, without starting a process.

Each handler takes the command and returns the result (any JSON value),
which the agent reports as a level-20 JSON ``SUCCESS``; raising
``BuiltinError`` reports an ``ERROR`` with the message instead.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from protocol.command import Command


class BuiltinError(Exception):
    """A built-in command that cannot be answered; the message says why."""


Builtin = Callable[[Command], Awaitable[Any]]


async def ping(command: Command) -> str:
    return "pong"


BUILTINS: dict[str, Builtin] = {"ping": ping}
