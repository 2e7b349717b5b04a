"""An agent that stops, restarts or is killed: long-running jobs run again, exactly once."""

import psutil
from support import TIMEOUT, builtin, current, group_members, wait_state, wait_until

import acclient
from acgrid.launcher import AgentSpec

#: A long heartbeat, so a restart stays within the agent's TTL and the controller keeps its jobs.
HEARTBEAT = 2.0
AGENT = AgentSpec(1, 1, config={"main": {"kill_grace": 1}})


def start_forever(client, job_id="forever"):
    client.execute(1, 1, "bash", ["-c", "echo 4::begun; sleep 300"], args=acclient.RunArgs(max_time=-1), id=job_id)
    return wait_state(client, job_id, "RUNNING").get("pid")


def running_again(client, job_id, old_pid):
    return wait_until(lambda: (job := current(client, job_id)) is not None and job.state == "RUNNING"
                    and job.get("pid") != old_pid and job.get("pid"), what=f"{job_id} running again")


def sleeps_of(pgid):
    return [process for process in group_members(pgid) if process.name() == "sleep"]


def test_a_long_running_job_runs_again_after_the_agent_stops_and_starts(make_grid):
    grid = make_grid([AGENT], heartbeat_interval=HEARTBEAT)
    client = grid.client()
    first_pid = start_forever(client)
    other = client.execute(1, 1, "sleep", ["300"], id="ordinary")
    wait_state(client, "ordinary", "RUNNING")
    before = max(message["id"] for message in builtin(client, "get_msgs", {"jobid": "forever"}))
    grid.stop_agent("1:1")
    assert group_members(first_pid) == []  # stopped with the agent, quietly
    assert current(client, "forever").state == "RUNNING"
    stopped = other.get_next_result(TIMEOUT)
    assert (stopped.state, stopped.data) == ("KILLED", "killed: the agent stopped")
    grid.start_agent("1:1")
    second_pid = running_again(client, "forever", first_pid)
    assert len(sleeps_of(second_pid)) == 1
    after = wait_until(lambda: [m["id"] for m in builtin(client, "get_msgs", {"jobid": "forever"}) if m["id"] > before],
                     what="the second run's message")
    assert after  # the message id counter went on
    builtin(client, "kill", {"id": "forever"})
    wait_state(client, "forever", "KILLED")


def test_an_agent_killed_hard_does_not_leave_a_duplicate(make_grid):
    grid = make_grid([AGENT], heartbeat_interval=HEARTBEAT)
    client = grid.client()
    first_pid = start_forever(client)
    grid.stop_agent("1:1", kill=True)
    assert len(sleeps_of(first_pid)) == 1  # orphaned: still running
    grid.start_agent("1:1")
    second_pid = running_again(client, "forever", first_pid)
    assert sleeps_of(first_pid) == []  # the old group was stopped before the job started again
    assert len(sleeps_of(second_pid)) == 1
    builtin(client, "kill", {"id": "forever"})
    wait_state(client, "forever", "KILLED")


def test_restart_answers_then_replaces_the_agent(make_grid):
    grid = make_grid([AGENT], heartbeat_interval=HEARTBEAT)
    client = grid.client()
    first_pid = start_forever(client)
    agent_pid = grid.agents["1:1"].pid
    assert builtin(client, "restart") == "restarting"
    second_pid = running_again(client, "forever", first_pid)
    assert group_members(first_pid) == []
    assert len(sleeps_of(second_pid)) == 1
    assert psutil.Process(agent_pid).is_running()  # the same process, a fresh program (exec)
    assert second_pid in [child.pid for child in psutil.Process(agent_pid).children()]
    assert builtin(client, "ping") == "pong"
    builtin(client, "kill", {"id": "forever"})
    wait_state(client, "forever", "KILLED")


def test_a_long_running_job_answered_lost_reports_again_when_its_agent_returns(make_grid):
    grid = make_grid([AGENT], heartbeat_interval=0.3)
    client = grid.client()
    first_pid = start_forever(client, "phoenix")
    grid.stop_agent("1:1")  # stops it quietly, keeps it in the state DB; no heartbeat any more
    lost = client.get_by_id(1, 1, "phoenix")
    answer = acclient.Job(client, grid.redis.blpop("cmds_queue_phoenix", timeout=TIMEOUT)[1])
    assert (answer.state, answer.data) == ("ERROR", "agent 1:1 lost")
    grid.start_agent("1:1")
    assert running_again(client, "phoenix", first_pid) != first_pid
    assert "phoenix" in {key.decode() for key in grid.redis.hkeys("ac:ctl:running:1:1")}  # open again
    lost.kill()
    assert acclient.Job(client, grid.redis.blpop("cmds_queue_phoenix", timeout=TIMEOUT)[1]).state == "KILLED"
