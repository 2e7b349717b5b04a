"""Job semantics on a real agent: long-running, restarts, recurring, queues, max_jobs, duplicates,
startup jobs and extensions."""

import itertools
import json
import sqlite3
import sys
import textwrap

import pytest
from support import TIMEOUT, builtin, current, wait_state, wait_until

import acclient
from acgrid.launcher import AgentSpec, Grid
from protocol import keys

SCRIPT = """
import json, os, sys
print("20::" + json.dumps({"argv": sys.argv[1:], "stdin": sys.stdin.read(), "cwd": os.getcwd(),
                          "extra": os.environ.get("EXTRA")}))
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scripts")
    (folder / "demo").mkdir()
    (folder / "demo" / "hello.py").write_text(textwrap.dedent(SCRIPT))
    return folder


@pytest.fixture(scope="module")
def jobs_grid(scripts):
    runpy = {"binary": sys.executable, "cwd": str(scripts), "args": ["{domain}/{name}.py", "{args}"],
             "env": {"EXTRA": "from-config"}}
    boot = {"name": "execute", "args": {"name": "bash", "args": ["-c", "echo 4::booted $AGENT_JOBID"]}}
    busy = {"main": {"kill_grace": 1}, "extensions": {"runpy": runpy}, "startup": {"boot": boot}}
    small = {"main": {"max_jobs": 2, "kill_grace": 1}}
    with Grid([AgentSpec(1, 1, config=busy), AgentSpec(1, 2, config=small)], heartbeat_interval=0.3) as grid:
        yield grid


def running_hash(grid, nid=1):
    return {key.decode() for key in grid.redis.hkeys(keys.running_jobs(1, nid))}


def test_long_running_job_reports_running_with_its_pid_at_once_and_is_saved(jobs_grid):
    client = jobs_grid.client()
    cmd = client.execute(1, 1, "sleep", ["300"], args=acclient.RunArgs(max_time=-1), id="forever")
    job = wait_state(client, "forever", "RUNNING")
    assert job.get("pid") > 0
    assert jobs_grid.redis.llen(keys.result_queue("forever")) == 0  # nothing pushed: it has not ended
    history = sqlite3.connect(jobs_grid.agent_dir("1:1") / "history.db")
    assert history.execute("SELECT id, pid FROM long_running").fetchall() == [("forever", job.get("pid"))]
    builtin(client, "kill", {"id": "forever"})
    assert cmd.get_next_result(TIMEOUT).state == "KILLED"
    assert history.execute("SELECT id FROM long_running").fetchall() == []


def test_n_restarts_make_n_plus_one_runs(jobs_grid):
    client = jobs_grid.client()
    cmd = client.execute(1, 1, "bash", ["-c", "echo 20::run; exit 3"], args=acclient.RunArgs(max_restart=2),
                         id="flaky")
    runs = list(cmd.iter_results(timeout=TIMEOUT))
    assert [(job.state, job.data, job.get("more")) for job in runs] == [("ERROR", "run", True)] * 2 + \
        [("ERROR", "run", None)]
    assert cmd.report() == {(1, 1): "error"}
    assert "flaky" not in running_hash(jobs_grid)
    assert jobs_grid.redis.llen(keys.result_queue("flaky")) == 0
    once = client.execute(1, 1, "true", args=acclient.RunArgs(max_restart=5), id="steady")
    assert [job.state for job in once.iter_results(timeout=TIMEOUT)] == ["SUCCESS"]
    assert "steady" not in running_hash(jobs_grid)


def test_a_timed_out_run_is_restarted_too(jobs_grid):
    client = jobs_grid.client()
    cmd = client.execute(1, 1, "sleep", ["30"], args=acclient.RunArgs(max_time=0.2, max_restart=1))
    assert [job.state for job in cmd.iter_results(timeout=TIMEOUT)] == ["TIMEOUT", "TIMEOUT"]
    assert cmd.id not in running_hash(jobs_grid)


def test_recurring_job_reports_every_run_until_killed(jobs_grid):
    client = jobs_grid.client()
    cmd = client.execute(1, 1, "bash", ["-c", "echo 20::$(date +%s%N)"], args=acclient.RunArgs(recurring_period=0.2),
                         id="ticker")
    runs = [cmd.get_next_result(TIMEOUT) for _ in range(3)]
    assert {(job.state, job.get("more")) for job in runs} == {("SUCCESS", True)}
    assert len({job.data for job in runs}) == 3  # three separate runs
    assert runs[0].starttime < runs[1].starttime < runs[2].starttime
    assert "ticker" in running_hash(jobs_grid)  # not final
    builtin(client, "kill", {"id": "ticker"})
    rest = list(cmd.iter_results(timeout=TIMEOUT))
    assert rest[-1].state == "KILLED" and not rest[-1].get("more")
    assert {job.state for job in rest[:-1]} <= {"SUCCESS"}
    assert "ticker" not in running_hash(jobs_grid)


def test_a_queue_runs_its_jobs_one_after_another_in_arrival_order(jobs_grid):
    client = jobs_grid.client()
    args = acclient.RunArgs(queue="serial")
    cmds = [client.execute(1, 1, "sleep", ["0.3"], args=args, id=f"serial-{index}") for index in range(3)]
    jobs = [cmd.get_next_result(TIMEOUT) for cmd in cmds]
    assert [job.state for job in jobs] == ["SUCCESS"] * 3
    for before, after in itertools.pairwise(jobs):
        assert before.starttime + before.time <= after.starttime


def test_restarts_keep_their_place_in_the_queue(jobs_grid):
    client = jobs_grid.client()
    flaky = client.execute(1, 1, "bash", ["-c", "sleep 0.1; exit 1"],
                           args=acclient.RunArgs(queue="strict", max_restart=2))
    after = client.execute(1, 1, "true", args=acclient.RunArgs(queue="strict"))
    runs = [flaky.get_next_result(TIMEOUT) for _ in range(3)]
    later = after.get_next_result(TIMEOUT)
    assert [job.state for job in runs] == ["ERROR"] * 3
    assert later.starttime >= runs[-1].starttime + runs[-1].time  # not between the restarts


def test_max_jobs_holds_extra_jobs_in_order_but_never_builtins(jobs_grid):
    client = jobs_grid.client()
    names = [f"slot-{index}" for index in range(4)]
    cmds = {name: client.execute(1, 2, "sleep", ["300"], id=name) for name in names}
    for name in names[:2]:
        wait_state(client, name, "RUNNING", agent=(1, 2))
    assert builtin(client, "ping", agent=(1, 2)) == "pong"  # answered while the agent is full
    assert len(builtin(client, "get_processes_stats", agent=(1, 2))) == 2
    waiting = [current(client, name, (1, 2)) for name in names[2:]]
    assert [job.state for job in waiting] == ["QUEUED", "QUEUED"]
    assert {(job._data["state"], job.phase) for job in waiting} <= {("RUNNING", "routed"), ("RUNNING", "waiting")}
    builtin(client, "kill", {"id": "slot-0"}, agent=(1, 2))
    wait_state(client, "slot-2", "RUNNING", agent=(1, 2))  # the first in line got the slot
    assert current(client, "slot-3", (1, 2)).state == "QUEUED"
    assert sorted(builtin(client, "killall", agent=(1, 2))["killed"]) == ["slot-1", "slot-2", "slot-3"]
    ends = {name: cmds[name].get_next_result(TIMEOUT) for name in names}
    assert {job.state for job in ends.values()} == {"KILLED"}
    assert ends["slot-3"].data == "killed (before it started)"


def test_a_job_id_already_running_is_a_duplicate(jobs_grid):
    client = jobs_grid.client()
    first = client.execute(1, 1, "sleep", ["300"], id="twin")
    wait_state(client, "twin", "RUNNING")
    second = client.execute(1, 1, "sleep", ["1"], id="twin")
    duplicate = second.get_next_result(TIMEOUT)
    assert (duplicate.state, duplicate.data) == ("DUPLICATE_ID", "job twin is already running on this agent")
    builtin(client, "kill", {"id": "twin"})
    assert first.get_next_result(TIMEOUT).state == "KILLED"


def test_startup_jobs_run_at_start_and_their_messages_are_in_the_db(jobs_grid):
    client = jobs_grid.client()
    messages = wait_until(lambda: builtin(client, "get_msgs", {"jobid": "boot"}), what="the startup job's message")
    assert [(message["level"], message["data"]) for message in messages] == [(4, "booted boot")]


def test_an_extension_runs_its_templated_script(jobs_grid, scripts):
    client = jobs_grid.client()
    args = acclient.RunArgs(domain="demo", name="hello", args=["a", "b c"])
    job = client.cmd(1, 1, "runpy", args, data={"x": 1}).get_next_result(TIMEOUT)
    assert job.state == "SUCCESS", job.dump()
    assert json.loads(job.data) == {"argv": ["a", "b c"], "stdin": '{"x": 1}', "cwd": str(scripts),
                                    "extra": "from-config"}


def test_extension_errors_name_the_problem(jobs_grid):
    client = jobs_grid.client()
    missing = client.cmd(1, 1, "runpy", acclient.RunArgs(name="hello", args=[])).get_next_result(TIMEOUT)
    assert (missing.state, missing.data) == ("ERROR", "extension runpy: run argument 'domain' is missing "
                                                      "(its args template '{domain}/{name}.py' needs it)")
    escape = client.cmd(1, 1, "runpy", acclient.RunArgs(domain="..", name="hello", args=[])).get_next_result(TIMEOUT)
    assert escape.state == "ERROR"
    assert escape.data == "extension runpy: args.domain: '..' is not allowed here: no '/', '..' or NUL"


def test_builtin_errors_name_the_problem(jobs_grid):
    client = jobs_grid.client()
    assert builtin(client, "kill", {"id": "nobody"}, state="ERROR") == "no job 'nobody' on this agent"
    assert builtin(client, "kill", {}, state="ERROR") == "data.id: missing"
    assert builtin(client, "get_msgs", {"levels": "x"}, state="ERROR").startswith("data.levels:")
    assert builtin(client, "get_msgs", {"colour": 1}, state="ERROR").startswith("data.colour: unknown key")
    assert builtin(client, "get_process_stats", {"id": "nobody"}, state="ERROR") == \
        "job 'nobody' is not running on this agent"
