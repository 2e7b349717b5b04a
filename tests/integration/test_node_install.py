"""docs/operations.md, "Installing a node, from start to end", done for real (all but systemd's part): a wheelhouse
built from the checkout, a pinned version installed from it into a fresh virtualenv with no index, the units and
configs the wheel carries installed from it, the inventory's user and agent2.toml made by the installed
ac-controller on a Redis with an aclfile, and the installed agent serving commands."""

import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import tomli_w
from support import TIMEOUT

from acgrid.launcher import AgentSpec, Grid
from acgrid.processes import spawn
from acgrid.redis_server import RedisServer
from controller import acl
from protocol import keys

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                                    ".hypothesis", "logs", "message.id", "history.db*")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def run(*argv: object, **options) -> str:
    done = subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, timeout=300, **options)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_node_installs_a_pinned_version_from_a_wheelhouse_and_serves(tmp_path):
    source = tmp_path / "release"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)  # controller/shipped (a link to configs/) becomes a copy
    run(sys.executable, "-m", "pip", "wheel", "-q", "-w", tmp_path / "wheelhouse", source)  # with every dependency
    held = {path.name.split("-")[0].lower() for path in (tmp_path / "wheelhouse").glob("*.whl")}
    assert {"agentcontroller", "redis", "trio", "psutil", "prometheus_client"} <= held, held

    node = tmp_path / "node"
    venv = node / "opt" / "agentcontroller"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    offline = {key: value for key, value in os.environ.items()
               if not key.startswith("PIP_") and key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    offline["PIP_CONFIG_FILE"] = os.devnull  # no index, no links but the wheelhouse: what a node without one has
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-index",
        "--find-links", tmp_path / "wheelhouse", f"agentcontroller=={VERSION}", env=offline)
    env = {**offline, "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    where = run(venv / "bin" / "python", "-c", "import controller; print(controller.__file__)", cwd=node, env=env)
    assert where.startswith(str(venv)), "the node runs the installed code, not the checkout"
    ac_controller = venv / "bin" / "ac-controller"

    listed = run(ac_controller, "files", "list", env=env)
    assert "systemd/ac-agent.service" in listed and "prometheus/ac-alerts.yml" in listed
    units = node / "etc" / "systemd" / "system"
    run(ac_controller, "files", "install", units, "ac-agent.service", env=env)
    assert filecmp.cmp(units / "ac-agent.service", ROOT / "configs" / "systemd" / "ac-agent.service", shallow=False)
    again = run(ac_controller, "files", "install", units, "ac-agent.service", env=env)
    assert "(already there, unchanged)" in again
    assert run(ac_controller, "files", "show", "agent2.toml", env=env) == (ROOT / "configs" / "agent2.toml").read_text()

    aclfile = tmp_path / "users.acl"
    aclfile.touch()
    with RedisServer(extra_args=("--aclfile", str(aclfile))) as server, \
            Grid([AgentSpec(1, 1)], bus_url=server.url, heartbeat_interval=0.3) as grid:
        (tmp_path / "inventory.csv").write_text("gid,nid,hostname,roles\n1,7,web-7.example.net,web\n")
        (tmp_path / "template.toml").write_text(tomli_w.dumps({"main": {"heartbeat_interval": 0.3}, "logging": {
            "db": {"type": "DB", "log_dir": "logs"}}}))  # the node's files beside its config, not in /var
        made = run(ac_controller, "--bus", server.url, "acl", "add-agents", tmp_path / "inventory.csv", "--out",
                   tmp_path / "pki", "--template", tmp_path / "template.toml", env=env)
        assert "user agent-1-7, roles granted: web" in made and "user agent-1-7 on" in aclfile.read_text()
        etc_ac = node / "etc" / "ac"
        etc_ac.mkdir(parents=True)
        shutil.copy(tmp_path / "pki" / "web-7.example.net" / "agent2.toml", etc_ac / "agent2.toml")
        check = run(venv / "bin" / "ac-agent", "--check", "-c", etc_ac / "agent2.toml", env=env)
        assert "ok" in check and "1:7" in check

        with grid.redis.pubsub(ignore_subscribe_messages=True) as events:
            events.subscribe(keys.EVENTS)
            agent = spawn([str(venv / "bin" / "ac-agent"), "-c", str(etc_ac / "agent2.toml")],
                          grid.log_path("agent-1-7"), env)
            grid.agents["1:7"] = agent  # the grid stops it
            deadline = time.monotonic() + TIMEOUT
            while True:
                assert agent.poll() is None, grid.log_path("agent-1-7").read_text()
                assert time.monotonic() < deadline, "the installed agent did not register"
                message = events.get_message(timeout=1)
                event = json.loads(message["data"]) if message else {}
                if event.get("event") == "agent_registered" and event["agent"] == "1:7":
                    break
        assert event["registration"]["version"] == VERSION
        client = grid.client()
        job = client.execute(1, 7, "bash", ["-c", "echo 20::installed"]).get_next_result(TIMEOUT)
        assert (job.state, job.data) == ("SUCCESS", "installed")
        assert [user.user for user in acl.list_agents(grid.redis) if user.connections] == ["agent-1-7"]
