"""Helpers for the operations tests: a fake systemd notify socket, daemons started beside a grid, scrapes."""

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from acgrid.launcher import AgentSpec, Grid
from acgrid.processes import spawn

TIMEOUT = 30.0


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
