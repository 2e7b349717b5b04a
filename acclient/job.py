"""``Job``: one agent's result for a command."""

import json
from typing import Any


class Job:
    """A job JSON, readable as attributes (``job.data``) or as a dict (``job['data']``)."""

    def __init__(self, client: Any, jobdata: dict[str, Any] | str | bytes) -> None:
        self._client = client
        self._data = json.loads(jobdata) if isinstance(jobdata, str | bytes) else dict(jobdata)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def keys(self):
        return self._data.keys()

    def dump(self) -> dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        return f"Job({self._data!r})"

    id = property(lambda self: self._data.get("id"), doc="Job (command) id")
    gid = property(lambda self: self._data.get("gid"), doc="Grid id of the agent")
    nid = property(lambda self: self._data.get("nid"), doc="Node id of the agent")
    cmd = property(lambda self: self._data.get("cmd"), doc="Job cmd")
    args = property(lambda self: self._data.get("args"), doc="Job args")
    data = property(lambda self: self._data.get("data"), doc="Job data")
    level = property(lambda self: self._data.get("level"), doc="Job level")
    state = property(lambda self: self._data.get("state"), doc="Job state")
    starttime = property(lambda self: self._data.get("starttime"), doc="Job starttime")
    time = property(lambda self: self._data.get("time"), doc="Job runtime in milliseconds")
    streams = property(lambda self: self._data.get("streams"), doc="[stdout tail, stderr tail]")
    critical = property(lambda self: self._data.get("critical"), doc="Last critical (level 9) message")
    tags = property(lambda self: self._data.get("tags"), doc="Tags of the command")
