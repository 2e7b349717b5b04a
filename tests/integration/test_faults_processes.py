"""Faults injected into the processes of jobs: an agent SIGKILLed under its jobs, jobs that escape their
process group, starts that fail. Counted: processes left behind, jobs unanswered, descriptors leaked."""

import contextlib
import json
import os

import psutil
from support import TIMEOUT, builtin, current, wait_state, wait_until

import acclient
from acgrid.launcher import AgentSpec

#: A heartbeat long enough that the agent's restart stays within it: its jobs are answered by the agent.
HEARTBEAT = 2.0
AGENT = AgentSpec(1, 1, config={"main": {"kill_grace": 1}})
#: A job that leaves a grandchild outside its process group (setsid), the way a daemon detaches.
ESCAPING = "setsid bash -c 'sleep 300' & sleep 300"


def processes_of(grid, job_id: str) -> list[psutil.Process]:
    """Live processes whose environment says they belong to job ``job_id`` of this grid's agent 1:1."""
    home = str(grid.agent_dir("1:1"))
    found = []
    for process in psutil.process_iter():
        try:
            environment = process.environ()
            if (environment.get("AGENT_JOBID"), environment.get("AGENT_HOME")) == (job_id, home) \
                    and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_an_agent_killed_hard_stops_what_its_previous_run_left_and_answers_each_job(make_grid):
    grid = make_grid([AGENT], heartbeat_interval=HEARTBEAT)
    client = grid.client()
    ordinary = [client.execute(1, 1, "bash", ["-c", ESCAPING], id=f"ordinary-{index}") for index in range(5)]
    client.execute(1, 1, "sleep", ["300"], args=acclient.RunArgs(max_time=-1), id="forever")
    for cmd in ordinary:
        wait_state(client, cmd.id, "RUNNING")
    first_pid = wait_state(client, "forever", "RUNNING").get("pid")
    for cmd in ordinary:
        wait_until(lambda cmd=cmd: len(processes_of(grid, cmd.id)) == 3,
                 what=f"{cmd.id}: bash, its sleep, the escaped sleep")

    grid.stop_agent("1:1", kill=True)
    left = {cmd.id: len(processes_of(grid, cmd.id)) for cmd in ordinary}
    assert left == {cmd.id: 3 for cmd in ordinary}, "SIGKILL takes no job down with the agent"
    grid.start_agent("1:1")

    answers = [cmd.get_next_result(TIMEOUT) for cmd in ordinary]
    assert {(job.state, job.data) for job in answers} == \
        {("ERROR", "the agent restarted before this job finished (whatever it still ran was stopped)")}
    leaked = {cmd.id: len(processes_of(grid, cmd.id)) for cmd in ordinary}
    print(f"processes left behind by 5 jobs (15 processes) after the agent's restart: {sum(leaked.values())}")
    assert leaked == {cmd.id: 0 for cmd in ordinary}
    second_pid = wait_until(lambda: (job := current(client, "forever")).get("pid") != first_pid and job.get("pid"),
                          what="the long-running job running again")
    assert [process.pid for process in processes_of(grid, "forever")] == [second_pid], "exactly one run of it"
    assert builtin(client, "ping") == "pong"
    builtin(client, "kill", {"id": "forever"})
    wait_state(client, "forever", "KILLED")


def sessions_of(processes: list[psutil.Process]) -> set[int]:
    """The sessions of those of ``processes`` that still live."""
    sessions = set()
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            sessions.add(os.getsid(process.pid))
    return sessions


def test_kill_takes_the_whole_tree_of_a_job_that_double_forks(make_grid):
    grid = make_grid([AGENT], heartbeat_interval=0.5)
    client = grid.client()
    daemonizing = "(setsid bash -c 'sleep 300 & sleep 300' &); sleep 300"  # a double fork, then a new session
    for job_id, script in (("escaping", ESCAPING), ("daemonizing", daemonizing)):
        cmd = client.execute(1, 1, "bash", ["-c", script], id=job_id)
        wait_state(client, job_id, "RUNNING")
        # (a double fork's middle process lives a moment: the job is looked at until it has settled)
        pids = wait_until(lambda job_id=job_id: len(found := processes_of(grid, job_id)) >= 3
                          and len(sessions_of(found)) == 2 and found,
                          what=f"{job_id}'s processes, part of them in a session of their own")
        builtin(client, "kill", {"id": job_id})
        assert cmd.get_next_result(TIMEOUT).state == "KILLED"
        assert processes_of(grid, job_id) == [], f"{job_id}: every process of the job is gone once it is answered"
        assert not [pid for pid in pids if psutil.pid_exists(pid.pid) and pid.status() != psutil.STATUS_ZOMBIE]

    ended = client.execute(1, 1, "bash", ["-c", "setsid sleep 300 & echo 20::done"], id="ended")
    assert ended.get_next_result(TIMEOUT).data == "done"
    assert processes_of(grid, "ended") == [], "a job that ends by itself takes its escaped child along"
    zombies = [child for child in psutil.Process(grid.agents["1:1"].pid).children()
               if child.status() == psutil.STATUS_ZOMBIE]
    assert zombies == [], "the agent reaps what it adopted"


def test_no_failed_start_leaks_a_descriptor(make_grid, tmp_path):
    grid = make_grid([AgentSpec(1, 1, config={"extensions": {"broken": {"binary": str(tmp_path / "missing")}}})],
                     heartbeat_interval=0.5)
    client = grid.client()
    agent = psutil.Process(grid.agents["1:1"].pid)
    not_executable = tmp_path / "plain.txt"
    not_executable.write_text("not a program")
    failures = [
        ("a lone surrogate in an argument", {"name": "echo", "args": ["\udfff"]}, None),
        ("a lone surrogate in the binary", {"name": "ech\udfffo"}, None),
        ("a lone surrogate in the environment", {"name": "true", "env": {"X": "\udfff"}}, None),
        ("a lone surrogate in stdin", {"name": "cat"}, "\udfff"),
        ("a NUL byte", {"name": "echo", "args": ["a\u0000b"]}, None),
        ("not on PATH", {"name": "no-such-program-here"}, None),
        ("a missing working directory", {"name": "true", "working_dir": str(tmp_path / "nope")}, None),
        ("not executable", {"name": str(not_executable)}, None),
        ("a missing absolute path", {"name": str(tmp_path / "missing")}, None),
    ]

    def attempt(cmd: str, args: dict, data: str | None) -> dict:
        command = {"id": f"bad-{os.urandom(4).hex()}", "gid": 1, "nid": 1, "cmd": cmd, "args": args,
                   "data": data or ""}
        grid.redis.rpush("cmds_queue", json.dumps(command))
        return json.loads(grid.redis.blpop(f"cmds_queue_{command['id']}", timeout=TIMEOUT)[1])

    for _, args, data in failures:  # once each, so that any descriptor the agent opens lazily is open
        attempt("execute", args, data)
    attempt("broken", {}, None)
    before = agent.num_fds()
    for _ in range(10):
        for what, args, data in failures:
            job = attempt("execute", args, data)
            assert job["state"] == "ERROR", (what, job)
            assert "internal error" not in job["data"] and len(job["data"]) < 500, (what, job["data"])
        assert attempt("broken", {}, None)["state"] == "ERROR"
    after = agent.num_fds()
    print(f"agent descriptors across {10 * (len(failures) + 1)} failed starts: {before} -> {after}")
    assert after <= before, "no failed start leaks a descriptor"
    assert "cannot be encoded" in attempt("execute", failures[0][1], None)["data"]
    assert builtin(client, "ping") == "pong"
