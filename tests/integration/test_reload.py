"""SIGHUP reloads what can change while a daemon runs, without dropping a job."""

import tomllib

import pytest
import tomli_w
from support import (
    FakeSystemd,
    command,
    current,
    reload,
    result,
    start_agent,
    start_controller,
    submit,
    wait_state,
    wait_until,
)

from acclient import RunArgs
from acgrid.launcher import AgentSpec
from protocol import keys


@pytest.fixture
def systemd():
    fake = FakeSystemd()
    yield fake
    fake.close()


def test_agent_reload_applies_extensions_startup_jobs_and_levels_and_keeps_its_jobs(make_grid, systemd, tmp_path):
    grid = make_grid([AgentSpec(1, 1)])
    spec = AgentSpec(1, 2, config={"logging": {"db": {"type": "DB", "log_dir": "logs", "levels": "*"}}})
    process = start_agent(grid, spec, systemd.env())
    systemd.expect("READY=1", process)
    wait_until(lambda: grid.redis.hexists(keys.AGENTS, "1:2"), what="agent 1:2 registered")
    client = grid.client()
    sleeper = client.execute(1, 2, "sleep", ["60"])
    wait_state(client, sleeper.id, "RUNNING", (1, 2))
    assert client.cmd(1, 2, "greet", RunArgs(name="world")).get_next_result(30).state == "UNKNOWN_CMD"

    path = grid.agent_dir("1:2") / "agent2.toml"
    config = tomllib.loads(path.read_text())
    marker = tmp_path / "startup-ran"
    config["extensions"] = {"greet": {"binary": "echo", "args": ["hello", "{name}"]}}
    config["startup"] = {"mark": {"name": "execute", "args": {"name": "touch", "args": [str(marker)]}}}
    config["logging"]["db"]["levels"] = "4"
    path.write_text(tomli_w.dumps(config))
    reload(process, systemd)

    greeting = client.cmd(1, 2, "greet", RunArgs(name="world")).get_next_result(30)
    assert (greeting.state, greeting.streams[0].strip()) == ("SUCCESS", "hello world")
    wait_until(marker.exists, what="the new startup job ran")
    job = client.execute(1, 2, "sh", ["-c", "echo 1::plain; echo 4::kept"]).get_next_result(30)
    assert [message["data"] for message in job.get_msgs()] == ["kept"], "the DB logger keeps level 4 only now"
    assert current(client, sleeper.id, (1, 2)).state == "RUNNING"
    log = grid.log_path("agent-1-2")
    assert "config reloaded: extensions, startup, loggers changed" in log.read_text()

    path.write_text("[main\n")
    reload(process, systemd)
    assert "reload refused, the running config stays: " in log.read_text()
    config["main"]["max_jobs"] = 7
    config["extensions"]["greet"]["args"] = ["hi", "{name}"]
    path.write_text(tomli_w.dumps(config))
    reload(process, systemd)
    assert "reload: max_jobs changed; that takes effect when the agent starts again" in log.read_text()
    assert client.cmd(1, 2, "greet", RunArgs(name="you")).get_next_result(30).streams[0].strip() == "hi you"
    assert marker.exists() and process.poll() is None

    sleeper.kill()
    assert wait_state(client, sleeper.id, "KILLED", (1, 2)).state == "KILLED"


def test_controller_reload_applies_new_settings_at_once(make_grid, systemd):
    grid = make_grid([AgentSpec(1, 1)])
    grid.stop_controller(0)
    process, path = start_controller(grid, {"results": {"result_ttl": 86400}}, systemd.env())
    systemd.expect("READY=1", process)

    path.write_text(tomli_w.dumps({"bus": {"url": grid.bus_url}, "results": {"result_ttl": 600}}))
    reload(process, systemd)
    sent = command("ping", gid=1, nid=1)
    submit(grid.redis, sent)
    assert result(grid.redis, sent["id"])["state"] == "SUCCESS"
    assert 0 < grid.redis.ttl(keys.job_results(sent["id"])) <= 600
    log = grid.log_path("controller-x")
    assert "config reloaded: result_ttl changed" in log.read_text()

    path.write_text(tomli_w.dumps({"bus": {"url": "redis://127.0.0.1:1/0"}, "results": {"result_ttl": 600}}))
    reload(process, systemd)
    assert "reload: bus changed; that takes effect when the controller starts again" in log.read_text()
    path.write_text("[results]\nresult_ttl = -5\n")
    reload(process, systemd)
    assert "reload refused, the running config stays: " in log.read_text()
    sent = command("ping", gid=1, nid=1)
    submit(grid.redis, sent)
    assert result(grid.redis, sent["id"])["state"] == "SUCCESS", "still on the same bus"
