"""The Lua scripts that make each controller step atomic inside Redis.

Each script is one step that must happen all at once or not at all (see the
comment at the top of each ``.lua`` file). They are called by hash and sent
again in full when Redis has forgotten them (after a restart).
"""

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acbus.connection import Connection, ReplyError
from acbus.link import Bus

_FOLDER = Path(__file__).parent / "scripts"


class Script:
    """One Lua step, called by hash and sent in full when Redis has forgotten it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (_FOLDER / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def evalsha(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The command to run the script, for use in a pipeline."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    async def run(self, connection: Connection | Bus, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the script once; an error reply raises ``ReplyError``."""
        reply = (await pipeline(connection, [self.evalsha(keys, args)]))[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def load(self, connection: Connection) -> None:
        await connection.execute("SCRIPT", "LOAD", self.source)


def is_noscript(reply: object) -> bool:
    """Whether a reply says Redis does not know the script (it restarted, or was flushed)."""
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


async def pipeline(target: Connection | Bus, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """Run ``commands`` (script calls from ``Script.evalsha`` among them) in one round trip; a script Redis does
    not know (it restarted) is sent again in full, and its reply takes the place of the ``NOSCRIPT``. Error
    replies come back in place."""
    replies = await target.pipeline(commands, raise_errors=False)
    forgotten = [index for index, reply in enumerate(replies) if is_noscript(reply)]
    if forgotten:
        again = [("EVAL", _BY_SHA[commands[index][1]].source, *commands[index][2:]) for index in forgotten]
        for index, reply in zip(forgotten, await target.pipeline(again, raise_errors=False), strict=True):
            replies[index] = reply
    return replies


ROUTE = Script("route")
DRAIN = Script("drain")
FAIL_JOBS = Script("fail_jobs")
RECOVER = Script("recover")
CLAIM = Script("claim")
TICK = Script("tick")
TUNNEL_OPEN = Script("tunnel_open")
TUNNEL_RELAY = Script("tunnel_relay")
TUNNEL_RESET = Script("tunnel_reset")
TUNNEL_ADOPT = Script("tunnel_adopt")
ROTATE_EPOCH = Script("rotate_epoch")
ALL = (ROUTE, DRAIN, FAIL_JOBS, RECOVER, CLAIM, TICK, TUNNEL_OPEN, TUNNEL_RELAY, TUNNEL_RESET, TUNNEL_ADOPT,
       ROTATE_EPOCH)
_BY_SHA = {script.sha: script for script in ALL}
