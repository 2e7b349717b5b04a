"""``BaseCmd`` and ``Cmd``: handles on a command sent through the controller."""

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from acclient.errors import NoTargetError
from acclient.job import Job
from protocol import keys
from protocol.states import FINAL_STATES, State

log = logging.getLogger(__name__)

RETURNED, FAILED, NO_REPLY = "returned", "error", "no reply"


class BaseCmd:
    """A command known by id (and the agent it ran on). Get one from
    ``Client.cmd`` or ``Client.get_by_id``."""

    def __init__(self, client: Any, id: str, gid: int | None, nid: int | None) -> None:
        self._client = client
        self._id = id
        self._gid = gid
        self._nid = nid

    id = property(lambda self: self._id, doc="Command id")
    gid = property(lambda self: self._gid, doc="Grid id")
    nid = property(lambda self: self._nid, doc="Node id")

    def get_jobs(self) -> dict[tuple[int, int], Job]:
        """Every available job result, keyed by ``(gid, nid)``; never blocks."""
        return self._client.get_cmd_jobs(self._id)

    def kill(self) -> Any:
        """Kill the command on its agent (if it is running there)."""
        gid, nid = self._agent()
        return self._client._ask(gid, nid, "kill", {"id": self._id})

    def get_stats(self) -> dict[str, Any]:
        """CPU and memory of the command's process on its agent; an error if it is not running."""
        gid, nid = self._agent()
        return self._client._ask(gid, nid, "get_process_stats", {"id": self._id})

    def get_msgs(self, levels: Any = "*", limit: int = 20) -> list[dict[str, Any]]:
        """The command's log messages from its agent's DB, newest first."""
        gid, nid = self._agent()
        return self._client.get_msgs(gid, nid, jobid=self._id, levels=levels, limit=limit)

    def _agent(self) -> tuple[int, int]:
        if not (self._gid and self._nid):
            raise NoTargetError(f"command {self._id} has no gid and nid")
        return self._gid, self._nid


class Cmd(BaseCmd):
    """A command this client sent. Results arrive in ``cmds_queue_<id>``, one per
    agent (and one per run of a recurring job)."""

    def __init__(self, client: Any, id: str, gid: int | None, nid: int | None, cmd: str, args: Any,
                 data: Any, role: str | None, fanout: bool) -> None:
        super().__init__(client, id, gid, nid)
        self._cmd = cmd
        self._args = args
        self._data = data
        self._role = role
        self._fanout = fanout
        self._report: dict[tuple[int, int], str] = {}

    cmd = property(lambda self: self._cmd, doc="Command name")
    args = property(lambda self: self._args, doc="Command run arguments")
    data = property(lambda self: self._data, doc="Command data")
    role = property(lambda self: self._role, doc="Command role")
    fanout = property(lambda self: self._fanout, doc="Whether the command fans out to every agent of the role")

    def dump(self) -> dict[str, Any]:
        """The command as a dict."""
        return {"id": self._id, "gid": self._gid, "nid": self._nid, "cmd": self._cmd,
                "args": self._args.dump() if self._args is not None else {}, "data": self._data,
                "role": self._role, "fanout": self._fanout}

    # -- results ------------------------------------------------------------------

    def get_next_result(self, timeout: float = 0) -> Job:
        """Pop the next result, waiting up to ``timeout`` seconds (0: forever).

        Each result is popped: the next call waits for the next one (another
        agent's, or another run's). Raises ``TimeoutError`` when none came in time.
        """
        popped = self._client._redis.blpop(keys.result_queue(self._id), timeout=timeout)
        if popped is None:
            raise TimeoutError(f"no result for command {self._id} within {timeout:g} s")
        return Job(self._client, popped[1])

    get_result = get_next_result

    def noblock_get_next_result(self) -> Job | None:
        """Pop the next result if there is one; ``None`` otherwise."""
        raw = self._client._redis.lpop(keys.result_queue(self._id))
        return None if raw is None else Job(self._client, raw)

    def iter_results(self, timeout: float = 0) -> Iterator[Job]:
        """Yield each result as it arrives, until every agent the command went to
        has given its last result, or ``timeout`` seconds passed (0: no limit).

        Afterwards ``report()`` says, per agent, whether it returned, failed or
        did not reply; agents that did not reply are also logged.
        """
        deadline = time.monotonic() + timeout if timeout else None
        last: dict[tuple[int, int], Job] = {}
        while True:
            targets = self.targets()
            if targets and all(target in last and not last[target].get("more") for target in targets):
                break
            wait = 0.0
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
            popped = self._client._redis.blpop(keys.result_queue(self._id), timeout=wait)
            if popped is None:
                break
            job = Job(self._client, popped[1])
            last[(job.gid or 0, job.nid or 0)] = job
            yield job
        self._report = {target: _verdict(last.get(target)) for target in self.targets() | set(last)}
        silent = sorted(f"{gid}:{nid}" for (gid, nid), verdict in self._report.items() if verdict == NO_REPLY)
        if silent:
            log.warning("command %s: no reply from %s", self._id, ", ".join(silent))

    def report(self) -> dict[tuple[int, int], str]:
        """Per agent, after ``iter_results``: ``"returned"``, ``"error"`` or ``"no reply"``."""
        return dict(self._report)

    def wait_started(self, timeout: float = 30) -> dict[tuple[int, int], Job]:
        """Wait until the job runs (or already ended) on every agent it went to,
        without popping results: the start status of a long-running job.

        Raises ``TimeoutError`` naming the agents where it did not start in time.
        """
        deadline = time.monotonic() + timeout
        with self._client._subscribe(keys.job_updates(self._id)) as updates:
            while True:
                jobs = self.get_jobs()
                waiting = sorted(f"{g}:{n}" for (g, n), job in jobs.items() if job._data["state"] == State.QUEUED)
                if jobs and not waiting:
                    return jobs
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"command {self._id} did not start within {timeout:g} s on "
                                       f"{', '.join(waiting) or 'any agent (not routed yet)'}")
                updates.get_message(timeout=left)

    def follow_msgs(self, timeout: float = 0, history: bool = False) -> Iterator[dict[str, Any]]:
        """Yield the command's messages live, as agents' AC loggers send them,
        until its jobs are over (or ``timeout`` seconds passed; 0: no limit).

        Which levels arrive is set by the agent's AC logger, or per command by
        ``RunArgs(loglevels_ac=...)``. With ``history``, first the messages
        already in the agents' DBs (oldest first), then the live ones, each once.
        Every message names its agent (``gid``, ``nid``).
        """
        deadline = time.monotonic() + timeout if timeout else None
        messages = keys.job_messages(self._id)
        seen: set[tuple[Any, Any, Any]] = set()
        with self._client._subscribe(messages, keys.job_updates(self._id)) as feed:
            if history:
                for message in self.stored_msgs():
                    seen.add((message["gid"], message["nid"], message["id"]))
                    yield message
            # An agent sends a job's messages before its final update, so once
            # the jobs are over every message has been received.
            over = self._over()
            while not over:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return
                event = feed.get_message(timeout=wait)
                if event is None:
                    continue
                if event["channel"].decode() != messages:
                    over = self._over()
                    continue
                message = json.loads(event["data"])
                if (message.get("gid"), message.get("nid"), message.get("id")) not in seen:
                    yield message

    def stored_msgs(self) -> list[dict[str, Any]]:
        """The command's messages in the DBs of the agents it went to, oldest first, naming their agent."""
        stored = []
        for gid, nid in self.targets():
            if gid and nid:
                found = self._client.get_msgs(gid, nid, jobid=self._id, limit=1000)
                stored += ({**message, "gid": gid, "nid": nid} for message in found)
        return sorted(stored, key=lambda message: (message["epoch"], message["id"]))

    def _over(self) -> bool:
        jobs = self.get_jobs()
        return bool(jobs) and all(job._data["state"] in FINAL_STATES and not job._data.get("more")
                                  for job in jobs.values())

    def targets(self) -> set[tuple[int, int]]:
        """The agents the command went to, as ``(gid, nid)`` (empty until it is routed)."""
        fields = self._client._redis.hkeys(keys.job_results(self._id))
        return {keys.parse_agent_name(field.decode()) for field in fields}

    def _agent(self) -> tuple[int, int]:
        if self._role is not None:
            raise NoTargetError(
                f"command {self._id} went to role {self._role!r}{' (fanout)' if self._fanout else ''}, not to one "
                f"agent: take a result's gid and nid and use client.get_by_id(job.gid, job.nid, job.id)")
        return super()._agent()


def _verdict(job: Job | None) -> str:
    if job is None:
        return NO_REPLY
    return RETURNED if job._data.get("state") == State.SUCCESS else FAILED
