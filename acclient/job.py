"""``Job``: one agent's result for a command."""

import json
from typing import Any

from protocol import keys
from protocol.states import FINAL_STATES, QUEUED, State


class Job:
    """A job JSON, readable as attributes (``job.data``) or as a dict (``job['data']``).

    While the job has no final state, reading it fetches its latest version,
    so ``job.state`` of a running job is never stale. A job that has not
    started yet (``RUNNING`` on the wire, with a ``phase``) reads as ``QUEUED``.
    """

    def __init__(self, client: Any, jobdata: dict[str, Any] | str | bytes) -> None:
        self._client = client
        self._data = json.loads(jobdata) if isinstance(jobdata, str | bytes) else dict(jobdata)

    def refresh(self) -> "Job":
        """Fetch the latest version of this job from ``jobresult:<id>``."""
        raw = self._client._redis.hget(keys.job_results(self.id), keys.agent_name(self.gid or 0, self.nid or 0))
        if raw is not None:
            self._data = json.loads(raw)
        return self

    def _read(self, key: str) -> Any:
        data = self._data
        if data.get("state") not in FINAL_STATES and self._client is not None:
            data = self.refresh()._data
        if key == "state" and data.get("state") == State.RUNNING and data.get("phase"):
            return QUEUED
        return data.get(key)

    def __getitem__(self, key: str) -> Any:
        value = self._read(key)
        if value is None and key not in self._data:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._read(key)
        return default if value is None else value

    def keys(self):
        return self._data.keys()

    def dump(self) -> dict[str, Any]:
        """The job as a dict (``state`` as ``job.state`` says it)."""
        state = self._read("state")
        return {**self._data, "state": state}

    def __repr__(self) -> str:
        return f"Job({self._data!r})"

    id = property(lambda self: self._data.get("id"), doc="Job (command) id")
    gid = property(lambda self: self._data.get("gid"), doc="Grid id of the agent")
    nid = property(lambda self: self._data.get("nid"), doc="Node id of the agent")
    cmd = property(lambda self: self._data.get("cmd"), doc="Job cmd")
    args = property(lambda self: self._read("args"), doc="Job args")
    data = property(lambda self: self._read("data"), doc="Job data")
    level = property(lambda self: self._read("level"), doc="Job level")
    state = property(lambda self: self._read("state"), doc="Job state: QUEUED until it starts, then RUNNING "
                     "until its final state")
    phase = property(lambda self: self._read("phase"), doc="What a QUEUED job waits for: 'routed' (the agent "
                     "has not taken it up yet) or 'waiting' (for a slot or its serial queue); None once it runs")
    starttime = property(lambda self: self._read("starttime"), doc="Job starttime (epoch ms)")
    time = property(lambda self: self._read("time"), doc="Job runtime in milliseconds")
    streams = property(lambda self: self._read("streams"), doc="[stdout tail, stderr tail]")
    critical = property(lambda self: self._read("critical"), doc="Last critical (level 9) message")
    tags = property(lambda self: self._read("tags"), doc="Tags of the command")
    exitcode = property(lambda self: self._read("exitcode"), doc="How the process ended: its exit status, or "
                        "minus the signal that ended it (None: no process ended, e.g. a built-in)")

    def get_msgs(self, levels: Any = "*", limit: int = 20) -> list[dict[str, Any]]:
        """This job's log messages from the agent's DB, newest first (``limit`` at most 1000)."""
        return self._client.get_msgs(self.gid, self.nid, jobid=self.id, levels=levels, limit=limit)

    def get_stats(self) -> dict[str, Any]:
        """CPU and memory of the job's process on the agent; an error if it is not running."""
        return self._client._ask(self.gid, self.nid, "get_process_stats", {"id": self.id})

    def kill(self) -> Any:
        """Kill this job on its agent (if it is running)."""
        return self._client._ask(self.gid, self.nid, "kill", {"id": self.id})
