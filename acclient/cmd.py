"""``BaseCmd`` and ``Cmd``: handles on a command sent through the controller."""

from typing import Any

from acclient.job import Job
from protocol import keys


class BaseCmd:
    """A command known by id. Use ``Client.cmd`` or ``Client.get_by_id`` to get one."""

    def __init__(self, client: Any, id: str, gid: int | None, nid: int | None) -> None:
        self._client = client
        self._id = id
        self._gid = gid
        self._nid = nid

    id = property(lambda self: self._id, doc="Command id")
    gid = property(lambda self: self._gid, doc="Grid id")
    nid = property(lambda self: self._nid, doc="Node id")

    def get_jobs(self) -> dict[tuple[int, int], Job]:
        """Every available job result, keyed by ``(gid, nid)``."""
        return self._client.get_cmd_jobs(self._id)


class Cmd(BaseCmd):
    """A command this client sent."""

    def __init__(self, client: Any, id: str, gid: int | None, nid: int | None, cmd: str, args: Any,
                 data: Any, role: str | None, fanout: bool) -> None:
        super().__init__(client, id, gid, nid)
        self._cmd = cmd
        self._args = args
        self._data = data
        self._role = role
        self._fanout = fanout

    cmd = property(lambda self: self._cmd, doc="Command name")
    args = property(lambda self: self._args, doc="Command run arguments")
    data = property(lambda self: self._data, doc="Command data")
    role = property(lambda self: self._role, doc="Command role")
    fanout = property(lambda self: self._fanout, doc="Whether the command fans out")

    def get_next_result(self, timeout: float = 0) -> Job:
        """Pop the next result; wait up to ``timeout`` seconds (0: forever).

        Raises ``TimeoutError`` when nothing arrived in time.
        """
        popped = self._client._redis.blpop(keys.result_queue(self._id), timeout=timeout)
        if popped is None:
            raise TimeoutError(f"no result for command {self._id} within {timeout:g} s")
        return Job(self._client, popped[1])

    def dump(self) -> dict[str, Any]:
        """The command as a dict."""
        return {"id": self._id, "gid": self._gid, "nid": self._nid, "cmd": self._cmd,
                "args": self._args.dump() if self._args is not None else {}, "data": self._data,
                "role": self._role, "fanout": self._fanout}
