"""Helpers for the integration tests, in one place.

* waiting: ``TIMEOUT`` (the one bound of every wait) and ``wait_until`` (the one poller);
* commands on the bus as the 2015 client writes them, and their results read back (``command``, ``submit``,
  ``results``, ``result``, ``run``, ``controller_command``);
* jobs through the client (``current``, ``wait_state``, ``builtin``) and the processes of a job
  (``group_members``);
* operations: a fake systemd notify socket (``FakeSystemd``), daemons started beside a grid (``start_agent``,
  ``start_controller``), ``reload``, metrics scrapes (``scrape``, ``value``).

Pytest puts ``tests/integration`` on ``sys.path``: test modules ``from support import ...``.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from acgrid.launcher import AgentSpec, Grid
from acgrid.processes import spawn
from protocol import keys

#: Seconds any one wait of a test may take before the test fails.
TIMEOUT = 30.0
#: Seconds between two looks of ``wait_until``.
POLL_INTERVAL = 0.05


# -- waiting -------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "the condition",
               interval: float = POLL_INTERVAL) -> Any:
    """Poll ``condition`` every ``interval`` s until it returns something truthy; return that.

    Only for states nothing announces (processes appearing in a group, a file filling, a log line);
    job states are awaited with ``wait_state``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(interval)


# -- raw commands on the bus -------------------------------------------------------------------


def command(cmd: str = "ping", **fields: Any) -> dict[str, Any]:
    """A command JSON as the 2015 client builds it, with a fresh id."""
    return {"id": fields.pop("id", None) or f"t-{uuid.uuid4().hex}", "gid": None, "nid": None, "role": None,
            "fanout": False, "cmd": cmd, "args": {}, "data": "", **fields}


def says_result_dropped(log: str, job_id: str, agent: str = r"\S+") -> bool:
    """Whether a controller's log says it dropped a result for ``job_id`` from ``agent`` ("1:2"), because that
    job was not open on it."""
    said = rf"agent {agent} sent results for jobs not open on it .*dropped \(\d+\): .*\b{re.escape(job_id)}\b"
    return re.search(said, log) is not None


def submit(bus: redis.Redis, *commands: dict[str, Any] | bytes | str) -> None:
    """Push commands (dicts are JSON-encoded, bytes and str go as they are) in one round trip."""
    bus.rpush(keys.CMDS_QUEUE, *(json.dumps(item) if isinstance(item, dict) else item for item in commands))


def results(bus: redis.Redis, command_id: str, count: int = 1, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Pop ``count`` results of a command from ``cmds_queue_<id>``; fail if they do not all come."""
    popped = []
    deadline = time.monotonic() + timeout
    while len(popped) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"command {command_id}: {len(popped)} of {count} results within {timeout:g} s"
        reply = bus.blpop(keys.result_queue(command_id), timeout=min(max(left, 0.01), 5))
        if reply is not None:
            popped.append(json.loads(reply[1]))
    return popped


def result(bus: redis.Redis, command_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    return results(bus, command_id, 1, timeout)[0]


def run(bus: redis.Redis, cmd: str = "ping", **fields: Any) -> dict[str, Any]:
    """Submit one command and return its (first) result."""
    sent = command(cmd, **fields)
    submit(bus, sent)
    return result(bus, sent["id"])


def controller_command(bus: redis.Redis, name: str, data: Any = "") -> dict[str, Any]:
    """Ask the controller itself; return its answer."""
    payload = data if isinstance(data, str) else json.dumps(data)
    return run(bus, "controller", args={"name": name}, data=payload)


# -- jobs through the client ---------------------------------------------------------------------


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


# -- operations: systemd, daemons beside a grid, metrics -------------------------------------------


class FakeSystemd:
    """A ``NOTIFY_SOCKET`` as systemd offers it: records every notification a daemon sends."""

    def __init__(self, watchdog_usec: int | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ac-notify-"))  # short: a socket path has ~100 bytes
        self.path = self.folder / "notify"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))
        self.watchdog_usec = watchdog_usec
        self.seen: list[dict[str, str]] = []

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path),
                **({"WATCHDOG_USEC": str(self.watchdog_usec)} if self.watchdog_usec else {})}

    def expect(self, field: str, process: subprocess.Popen, timeout: float = TIMEOUT) -> dict[str, str]:
        """Wait for a notification holding ``field`` (e.g. ``READY=1``); return it as a dict."""
        key, _, value = field.partition("=")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {field} within {timeout:g} s; the last notifications: {self.seen[-5:]}"
            self.socket.settimeout(min(left, 0.5))
            try:
                raw = self.socket.recv(65536)
            except TimeoutError:
                assert process.poll() is None, f"the daemon exited ({process.returncode}) before {field}"
                continue
            message = dict(line.split("=", 1) for line in raw.decode().splitlines())
            self.seen.append(message)
            if message.get(key) == value:
                return message

    def close(self) -> None:
        self.socket.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_agent(grid: Grid, spec: AgentSpec, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start an agent of ``spec`` (not waiting for it); the grid stops it."""
    path = grid.write_agent_config(spec)
    process = spawn([sys.executable, "-m", "agent", "-c", str(path), "--log-level", "DEBUG"],
                    grid.log_path(f"agent-{spec.gid}-{spec.nid}"), env)
    grid.agents[spec.name] = process
    return process


def start_controller(grid: Grid, config: dict[str, Any], env: dict[str, str] | None = None,
                     name: str = "controller-x") -> tuple[subprocess.Popen, Path]:
    """Start one more controller with ``config`` (not waiting for it); the grid stops it."""
    path = grid.workdir / f"{name}.toml"
    path.write_text(tomli_w.dumps({"bus": {"url": grid.bus_url}, **config}))
    process = spawn([sys.executable, "-m", "controller", "-c", str(path)], grid.log_path(name), env)
    grid.controllers.append(process)
    return process, path


def reload(process: subprocess.Popen, systemd: FakeSystemd) -> None:
    """SIGHUP, and wait until the daemon says it has reloaded."""
    process.send_signal(signal.SIGHUP)
    systemd.expect("RELOADING=1", process)
    systemd.expect("READY=1", process)


def scrape(address: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The samples at ``http://<address>/metrics``: name -> {labels: value}."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=TIMEOUT) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a counter not yet counted)."""
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)
