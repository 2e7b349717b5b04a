"""Helpers for the agent's integration tests: waiting on results, reading built-ins, watching processes."""

import json
import os
import time
from collections.abc import Callable
from typing import Any

import psutil

from protocol import keys

TIMEOUT = 30.0


def wait_for(condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "the condition") -> Any:
    """Poll ``condition`` until it returns something truthy; return that.

    Only for states nothing announces (processes appearing in a group, a file
    filling); job states are awaited with ``wait_state``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.05)


def current(client, job_id: str, agent: tuple[int, int] = (1, 1)):
    """The latest job JSON of ``job_id`` on ``agent`` (jobresult), or None."""
    return client.get_cmd_jobs(job_id).get(agent)


def wait_state(client, job_id: str, state: str, agent: tuple[int, int] = (1, 1)):
    """Wait for the job to reach ``state`` on ``agent``, woken by the controller's job updates."""
    deadline = time.monotonic() + TIMEOUT
    with client._subscribe(keys.job_updates(job_id)) as updates:
        while True:
            job = current(client, job_id, agent)
            if job is not None and job.state == state:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"job {job_id} did not reach {state} within {TIMEOUT:g} s")
            updates.get_message(timeout=left)


def builtin(client, cmd: str, data: Any = None, agent: tuple[int, int] = (1, 1), state: str = "SUCCESS"):
    """Run a built-in; return its parsed result (or its data, for an expected ERROR)."""
    job = client.cmd(*agent, cmd, None, data=None if data is None else json.dumps(data)).get_next_result(TIMEOUT)
    assert job.state == state, job.dump()
    return json.loads(job.data) if state == "SUCCESS" else job.data


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of a process group."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (psutil.Error, OSError):
            continue
    return members
