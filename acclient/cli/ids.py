"""Command ids as people type them: whole, or any prefix that only one recent command's id starts with."""

import json
from typing import Any

from acclient.cli.app import Failure
from acclient.cli.parser import Exit
from acclient.client import Client
from protocol import keys

#: How many of the newest commands (``joblog``) an id prefix is looked for in.
SEARCHED = 10_000
PAGE = 500
#: An id this long is taken as whole even when the bus does not know it (yet): it may not be routed yet.
WHOLE_ID = 32


def resolve(client: Client, given: str) -> str:
    """The one command id ``given`` names; fail (exit 2) when none or several do."""
    if client._redis.exists(keys.job_results(given)):
        return given
    found = [command["id"] for command in recent(client, SEARCHED) if str(command.get("id", "")).startswith(given)]
    found = list(dict.fromkeys(found))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise Failure(f"id {given!r} is the start of {len(found)} commands' ids ({shown}): give more of it",
                      Exit.USAGE)
    if len(given) >= WHOLE_ID:
        return given
    raise Failure(f"no command {given} (no recent command's id starts with it, or its results expired): "
                  "ac jobs lists the recent ones", Exit.USAGE)


def recent(client: Client, limit: int, start: int = 0) -> list[dict[str, Any]]:
    """Up to ``limit`` commands of ``joblog`` from ``start``, newest first."""
    commands: list[dict[str, Any]] = []
    while len(commands) < limit:
        raw = client._redis.lrange(keys.JOBLOG, start, start + min(PAGE, limit - len(commands)) - 1)
        if not raw:
            break
        start += len(raw)
        for item in raw:
            try:
                commands.append(json.loads(item))
            except ValueError:
                continue
    return commands
