"""The client API of the seed reference, against a real grid."""

import json
import re
import time

import pytest
from support import TIMEOUT

import acclient
from acclient import JobError, NoTargetError, RunArgs


def test_run_args_api():
    args = RunArgs(domain="js", name="nginx", max_time=-1, args=["-c", "x"], loglevels_db="1")
    assert args.dump() == {"domain": "js", "name": "nginx", "max_time": -1, "args": ["-c", "x"], "loglevels": "*",
                           "loglevels_db": "1"}
    assert (args.domain, args.name, args.max_time, args.max_restart, args.queue) == ("js", "nginx", -1, 0, None)
    updated = args.update({"max_time": 10, "queue": "q"})
    assert (updated.max_time, updated.queue, updated.name) == (10, "q", "nginx")
    assert args.max_time == -1, "update returns a new RunArgs"
    assert args.update(RunArgs(name="ls")).name == "ls"
    with pytest.raises(ValueError, match="args.max_time"):
        RunArgs(max_time="soon")
    with pytest.raises(ValueError, match="args.loglevels"):
        RunArgs(loglevels="1-x")


def test_usage_page_spellings(grid):
    assert acclient.getRunArgs(name="ls") == acclient.runArgs(name="ls") == RunArgs(name="ls")
    address = grid.address
    client = acclient.get(address=address.host, port=address.port, password=None)
    assert client.execute(1, 1, "true").get_result(TIMEOUT).state == "SUCCESS"


@pytest.mark.parametrize(("call", "message"), [
    (lambda c: c.cmd(1, 1, "ping", None, role="web"), "nid: a command goes to one node (gid and nid) or to a role"),
    (lambda c: c.cmd(None, None, "ping", None), "no target: give gid and nid, a role, targets or hosts"),
    (lambda c: c.cmd(1, None, "ping", None), "no target: give gid and nid, a role, targets or hosts"),
    (lambda c: c.cmd(None, None, "ping", None, targets=["1:1"], role="web"), "targets names its agents"),
    (lambda c: c.cmd(None, None, "ping", None, role="web", rollout={"batch": 2}), "rollout: a rollout starts"),
    (lambda c: c.cmd(None, None, "ping", None, role="web", fanout=True, rollout={"batch": "0%"}), "rollout.batch"),
    (lambda c: c.cmd(1, 1, "ping", None, exclude=["1:2"]), "exclude: a command to one node"),
    (lambda c: c.cmd(None, None, "ping", None, targets="1:1"), "targets: expected a list of agents"),
    (lambda c: c.cmd(1, 1, "ping", {"name": "x"}), "args must be a RunArgs"),
])
def test_cmd_refuses_impossible_targets(grid, call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(grid.client())


def test_cmd_descriptor_and_results(grid):
    client = grid.client()
    cmd = client.cmd(1, 1, "ping", RunArgs(), data={"hello": 1}, id="descriptor-1")
    assert (cmd.id, cmd.gid, cmd.nid, cmd.cmd, cmd.role, cmd.fanout, cmd.data) == \
        ("descriptor-1", 1, 1, "ping", None, False, {"hello": 1})
    assert cmd.dump()["args"] == {"loglevels": "*"}
    job = cmd.get_next_result(TIMEOUT)
    assert isinstance(job, acclient.Job)
    assert (job.id, job["state"], job.get("level"), job.cmd) == ("descriptor-1", "SUCCESS", 20, "ping")
    assert cmd.noblock_get_next_result() is None
    assert set(cmd.get_jobs()) == {(1, 1)}
    ref = client.get_by_id(1, 1, "descriptor-1")
    assert isinstance(ref, acclient.BaseCmd)
    assert ref.get_jobs()[(1, 1)].data == '"pong"'


def test_noblock_get_next_result_never_waits(grid):
    cmd = grid.client().execute(2, 1, "sleep", ["0.5"])
    assert cmd.noblock_get_next_result() is None
    assert cmd.get_next_result(TIMEOUT).state == "SUCCESS"
    assert cmd.noblock_get_next_result() is None


def test_wait_started_sees_a_long_running_job_start(grid):
    client = grid.client()
    cmd = client.execute(1, 2, "sleep", ["2"])
    started = cmd.wait_started(TIMEOUT)
    assert started[(1, 2)]._data["state"] == "RUNNING"
    assert started[(1, 2)]._data["pid"] > 0
    assert cmd.noblock_get_next_result() is None


def test_wait_started_returns_a_routing_error_at_once(grid):
    jobs = grid.client().execute(1, 9, "true").wait_started(TIMEOUT)
    assert jobs[(1, 9)].state == "ERROR"


def test_a_job_without_final_result_refreshes_when_read(grid):
    client = grid.client()
    cmd = client.execute(1, 2, "bash", ["-c", "sleep 0.3; echo 20::done"])
    snapshot = cmd.wait_started(TIMEOUT)[(1, 2)]
    assert snapshot._data["state"] == "RUNNING"
    cmd.get_next_result(TIMEOUT)
    assert snapshot.state == "SUCCESS"
    assert snapshot.data == "done"


def test_get_cmds_is_the_history_newest_first(grid):
    client = grid.client()
    for n in range(3):
        client.cmd(1, 1, "ping", None, id=f"history-{n}")
    client.cmd(1, 1, "ping", None, id="history-last").get_next_result(TIMEOUT)
    recent = [command["id"] for command in client.get_cmds(0, 4)]
    assert recent == ["history-last", "history-2", "history-1", "history-0"]
    assert [command["id"] for command in client.get_cmds(1, 2)] == ["history-2", "history-1"]


def test_iter_results_reports_per_node(grid):
    client = grid.client()
    cmd = client.execute(None, None, "bash", ["-c", 'test "$AGENT_NID" = 2'], role="web", fanout=True)
    results = list(cmd.iter_results(timeout=TIMEOUT))
    assert sorted((job.gid, job.nid) for job in results) == [(1, 1), (1, 2)]
    assert cmd.report() == {(1, 1): "error", (1, 2): "returned"}


def test_iter_results_after_get_next_result_yields_the_rest_and_ends_when_every_agent_has_answered(grid):
    client = grid.client()
    cmd = client.cmd(None, None, "ping", None, role="web", fanout=True)
    first = cmd.get_next_result(TIMEOUT)
    started = time.monotonic()
    rest = list(cmd.iter_results(timeout=TIMEOUT))
    assert sorted((job.gid, job.nid) for job in [first, *rest]) == [(1, 1), (1, 2)]
    assert time.monotonic() - started < TIMEOUT / 2, "it waited for a result it had been given already"
    assert cmd.report() == {(1, 1): "returned", (1, 2): "returned"}
    one = client.cmd(1, 1, "ping", None)
    assert one.get_next_result(TIMEOUT).state == "SUCCESS"
    assert list(one.iter_results(timeout=TIMEOUT)) == [] and one.report() == {(1, 1): "returned"}
    assert time.monotonic() - started < TIMEOUT / 2


def test_iter_results_names_the_agents_that_did_not_answer(grid, caplog):
    client = grid.client()
    cmd = client.execute(None, None, "bash", ["-c", 'if [ "$AGENT_NID" = 2 ]; then sleep 30; fi'], role="web",
                         fanout=True, args=RunArgs(max_time=20))
    results = list(cmd.iter_results(timeout=3))
    assert [(job.gid, job.nid) for job in results] == [(1, 1)]
    assert cmd.report() == {(1, 1): "returned", (1, 2): "no reply"}
    assert "no reply from 1:2" in caplog.text


def test_role_commands_point_to_get_by_id(grid):
    cmd = grid.client().cmd(None, None, "ping", None, role="*", fanout=True)
    for method in (cmd.kill, cmd.get_stats, cmd.get_msgs):
        with pytest.raises(NoTargetError, match=r"client.get_by_id\(job.gid, job.nid, job.id\)"):
            method()


def test_list_agents(grid):
    agents = {(agent["gid"], agent["nid"]): agent for agent in grid.client().list_agents()}
    assert set(agents) == {(1, 1), (1, 2), (2, 1)}
    assert agents[(1, 1)]["roles"] == ["db", "web"] and agents[(1, 1)]["alive"]


def test_failed_shortcut_raises_job_error(grid):
    with pytest.raises(JobError, match="agent 1:9 is not alive"):
        grid.client()._ask(1, 9, "ping")


def test_data_objects_are_json_encoded(grid):
    job = grid.client().execute(1, 1, "cat", data={"a": [1, 2]}).get_next_result(TIMEOUT)
    assert json.loads(job.streams[0]) == {"a": [1, 2]}
