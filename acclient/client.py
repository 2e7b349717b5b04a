"""``Client``: send commands to agents through the controller."""

import json
import uuid
from typing import Any

import redis

from acclient.cmd import Cmd
from acclient.job import Job
from acclient.runargs import RunArgs
from protocol import keys


class Client:
    """A client of the agent controller, talking to its Redis bus.

    :param address: Redis host address
    :param port: Redis port
    :param password: (optional) Redis password
    :param db: Redis database number
    """

    def __init__(self, address: str = "localhost", port: int = 6379, password: str | None = None,
                 db: int = 0, **redis_options: Any) -> None:
        self._redis = redis.Redis(host=address, port=port, password=password, db=db, **redis_options)

    def cmd(self, gid: int | None, nid: int | None, cmd: str, args: RunArgs | None, data: Any = None,
            id: str | None = None, role: str | None = None, fanout: bool = False) -> Cmd:
        """Send a command; return its ``Cmd`` descriptor.

        :param gid: grid id (can be None)
        :param nid: node id (can be None)
        :param cmd: the command (``execute``, ``get_os_info``, an extension, ...)
        :param args: a ``RunArgs``
        :param data: sent to the command's stdin; anything but a string is JSON-encoded
        :param id: command id; a random uuid4 when None
        :param role: only agents holding this role may run it; excludes ``nid``. ``"*"`` means any agent
        :param fanout: send to every agent holding ``role``
        """
        if role is not None and nid:
            raise ValueError("role and nid are mutually exclusive: give gid and nid, or a role (and maybe gid)")
        if role is None and not (gid and nid):
            raise ValueError("give gid and nid, or a role")
        args = args if args is not None else RunArgs()
        if not isinstance(args, RunArgs):
            raise ValueError("args must be a RunArgs")
        id = id or str(uuid.uuid4())
        payload = data if data is None or isinstance(data, str) else json.dumps(data)
        command = {"id": id, "gid": gid or None, "nid": nid or None, "role": role, "fanout": bool(fanout),
                   "cmd": cmd, "args": args.dump(), "data": payload}
        self._redis.rpush(keys.CMDS_QUEUE, json.dumps(command))
        return Cmd(self, id, gid, nid, cmd, args, data, role, fanout)

    def execute(self, gid: int | None, nid: int | None, executable: str, cmdargs: list[str] | None = None,
                args: RunArgs | None = None, data: Any = None, id: str | None = None, role: str | None = None,
                fanout: bool = False) -> Cmd:
        """Run ``executable`` with ``cmdargs`` on the agent (no shell)."""
        args = (args or RunArgs()).update({"name": executable, "args": list(cmdargs or [])})
        return self.cmd(gid, nid, "execute", args, data, id, role, fanout)

    def get_cmd_jobs(self, id: str) -> dict[tuple[int, int], Job]:
        """Every available job result of command ``id``, keyed by ``(gid, nid)``."""
        results = self._redis.hgetall(keys.job_results(id))
        return {keys.parse_agent_name(field.decode()): Job(self, raw) for field, raw in results.items()}
