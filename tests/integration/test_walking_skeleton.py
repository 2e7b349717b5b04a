"""The thin end-to-end path through real redis-server, controller and agent processes."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from support import TIMEOUT

import acclient
from protocol import keys


def test_seed_block_example_returns_the_listing_as_data(grid):
    client = grid.client()
    job = client.execute(1, 1, "bash", ["-c", "echo 20::: && ls -l /opt && echo :::"]).get_next_result(TIMEOUT)
    listing = "\n".join(line for line in os.popen("ls -l /opt").read().splitlines())
    assert job.state == "SUCCESS"
    assert job.level == 20
    assert job.data == listing
    assert (job.gid, job.nid, job.cmd) == (1, 1, "execute")


def test_plain_ls_shows_its_output_in_streams(grid):
    job = grid.client().execute(1, 2, "ls", ["-l", "/"]).get_next_result(TIMEOUT)
    assert job.state == "SUCCESS"
    assert (job.level, job.data) == (0, "")
    assert "usr" in job.streams[0] and job.streams[1] == ""
    assert job.time >= 0 and job.starttime > 0


def test_data_is_the_stdin_and_the_environment_names_the_job(grid):
    script = 'read line; echo "20::$line|$AGENT_GID|$AGENT_NID|$AGENT_JOBID|$EXTRA"'
    args = acclient.RunArgs(env={"EXTRA": "yes"})
    cmd = grid.client().execute(2, 1, "bash", ["-c", script], args=args, data="hello agent", id="env-job")
    job = cmd.get_next_result(TIMEOUT)
    assert job.data == "hello agent|2|1|env-job|yes"


def test_failures_are_clear(grid):
    client = grid.client()
    failed = client.execute(1, 1, "bash", ["-c", "echo broken >&2; exit 3"]).get_next_result(TIMEOUT)
    assert (failed.state, failed.data, failed.exitcode) == ("ERROR", "exited with code 3", 3)
    assert failed.streams[1] == "broken\n"
    missing = client.execute(1, 1, "no-such-binary-here").get_next_result(TIMEOUT)
    assert missing.state == "ERROR" and missing.exitcode is None, "no process ran"
    assert missing.data == "cannot run 'no-such-binary-here': not found on PATH"
    unknown = client.cmd(1, 1, "frobnicate", None).get_next_result(TIMEOUT)
    assert (unknown.state, unknown.data) == ("UNKNOWN_CMD", "unknown command 'frobnicate'")


def test_timeout(grid):
    job = grid.client().execute(1, 1, "sleep", ["30"], args=acclient.RunArgs(max_time=0.5)).get_next_result(TIMEOUT)
    assert job.state == "TIMEOUT"
    assert 400 <= job.time < 15_000


def test_dead_agent_is_answered_at_once(grid):
    job = grid.client().execute(1, 7, "ls").get_next_result(TIMEOUT)
    assert (job.state, job.data) == ("ERROR", "agent 1:7 is not alive")


def test_results_joblog_and_get_next_result_timeout(grid):
    client = grid.client()
    cmd = client.cmd(1, 2, "ping", None, id="skeleton-ping")
    job = cmd.get_next_result(TIMEOUT)
    assert (job.state, job.level, json.loads(job.data)) == ("SUCCESS", 20, "pong")
    jobs = client.get_cmd_jobs("skeleton-ping")
    assert list(jobs) == [(1, 2)] and jobs[(1, 2)].state == "SUCCESS"
    logged = [json.loads(raw) for raw in grid.redis.lrange(keys.JOBLOG, 0, 50)]
    assert any(entry["id"] == "skeleton-ping" for entry in logged)
    with pytest.raises(TimeoutError, match="no result for command skeleton-ping within 0.2 s"):
        cmd.get_next_result(timeout=0.2)


def test_role_routing_and_fanout(grid):
    client = grid.client()
    job = client.cmd(2, None, "ping", None, role="db").get_next_result(TIMEOUT)
    assert (job.gid, job.nid) == (2, 1)
    cmd = client.cmd(None, None, "ping", None, role="web", fanout=True)
    answered = {(job.gid, job.nid) for job in (cmd.get_next_result(TIMEOUT), cmd.get_next_result(TIMEOUT))}
    assert answered == {(1, 1), (1, 2)}


def test_the_example_agent_config_runs_as_is(grid, tmp_path, monkeypatch):
    """configs/agent2.toml, only its bus URL pointed at the grid, serves jobs, extensions and startup jobs."""
    configs = Path(__file__).resolve().parents[2] / "configs"
    shutil.copytree(configs / "scripts", tmp_path / "scripts")
    text = (configs / "agent2.toml").read_text().replace("redis://127.0.0.1:6379/0", grid.bus_url)
    text = text.replace("gid = 1 ", "gid = 5 ")
    assert "gid = 5 " in text
    (tmp_path / "agent2.toml").write_text(text)
    bin_dir = str(Path(sys.executable).parent)  # where ac-jumpscript is installed
    monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ["PATH"])
    grid.start_agent_from_config(tmp_path / "agent2.toml", "5:1")
    try:
        client = grid.client()
        job = client.execute_jumpscript(5, 1, "demo", "hello", data={"name": "grid"}).get_next_result(TIMEOUT)
        assert (job.state, json.loads(job.data)) == ("SUCCESS", {"greeting": "hello grid"})
        booted = client.get_msgs(5, 1, jobid="hello")
        assert "agent started" in [message["data"] for message in booted]
    finally:
        grid.stop_agent("5:1")
