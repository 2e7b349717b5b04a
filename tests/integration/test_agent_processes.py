"""Processes: one group per job, nothing left behind, and hostile jobs ending in a clear result."""

import psutil
import pytest
from support import TIMEOUT, builtin, group_members, wait_state, wait_until

import acclient
from acgrid.launcher import AgentSpec

KILL_GRACE = 1.0
#: Starts a background sleep in the job's group, then waits.
WITH_CHILD = ["-c", "sleep 300 & echo 4::started; wait"]


@pytest.fixture(scope="module")
def hostile_grid():
    from acgrid.launcher import Grid

    with Grid([AgentSpec(1, 1, config={"main": {"kill_grace": KILL_GRACE}})], heartbeat_interval=0.3) as grid:
        yield grid


def test_kill_stops_the_whole_group(hostile_grid):
    client = hostile_grid.client()
    cmd = client.execute(1, 1, "bash", WITH_CHILD, id="group-kill")
    running = wait_state(client, "group-kill", "RUNNING")
    wait_until(lambda: len(group_members(running.get("pid"))) == 2, what="bash and its sleep running")
    builtin(client, "kill", {"id": "group-kill"})
    job = cmd.get_next_result(TIMEOUT)
    assert (job.state, job.data) == ("KILLED", "killed")
    assert group_members(running.get("pid")) == []


def test_timeout_stops_the_whole_group(hostile_grid):
    client = hostile_grid.client()
    job = client.execute(1, 1, "bash", WITH_CHILD, args=acclient.RunArgs(max_time=0.5)).get_next_result(TIMEOUT)
    assert (job.state, job.data) == ("TIMEOUT", "timed out after 0.5 s")
    assert job.streams[0] == "started\n"
    assert group_members(job.get("pid")) == []


def test_what_a_finished_job_left_behind_is_stopped(hostile_grid):
    job = hostile_grid.client().execute(1, 1, "bash", ["-c", "sleep 300 & echo 20::done"]).get_next_result(TIMEOUT)
    assert (job.state, job.data) == ("SUCCESS", "done")
    assert group_members(job.get("pid")) == []


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(hostile_grid):
    client = hostile_grid.client()
    script = "trap '' TERM; (trap '' TERM; sleep 300) & echo 4::stubborn; while true; do sleep 0.1; done"
    cmd = client.execute(1, 1, "bash", ["-c", script], id="stubborn")
    running = wait_state(client, "stubborn", "RUNNING")
    wait_until(lambda: len(group_members(running.get("pid"))) >= 2, what="the stubborn job and its child")
    builtin(client, "kill", {"id": "stubborn"})
    job = cmd.get_next_result(TIMEOUT)
    assert job.state == "KILLED"
    assert job.time >= KILL_GRACE * 1000 * 0.9  # it took SIGKILL, after the grace period
    assert group_members(running.get("pid")) == []


def test_a_missing_binary_or_folder_is_a_clear_error(hostile_grid, tmp_path):
    client = hostile_grid.client()
    missing = client.execute(1, 1, "/no/such/binary").get_next_result(TIMEOUT)
    assert (missing.state, missing.data) == ("ERROR", "cannot run '/no/such/binary': No such file or directory")
    args = acclient.RunArgs(working_dir="/no/such/folder")
    nowhere = client.execute(1, 1, "ls", args=args).get_next_result(TIMEOUT)
    assert (nowhere.state, nowhere.data) == ("ERROR", "cannot run 'ls': working directory '/no/such/folder' "
                                                       "does not exist")
    plain_file = tmp_path / "not-executable"
    plain_file.write_text("#!/bin/sh\n")
    plain_file.chmod(0o644)
    nul = client.execute(1, 1, "echo", ["a\0b"]).get_next_result(TIMEOUT)
    assert (nul.state, nul.data) == ("ERROR", "cannot run 'echo': an argument or the working directory contains "
                                              "a NUL byte")
    not_executable = client.execute(1, 1, str(plain_file)).get_next_result(TIMEOUT)
    assert (not_executable.state, not_executable.data) == ("ERROR", f"cannot run '{plain_file}': Permission denied")


def agent_rss(grid) -> int:
    return psutil.Process(grid.agents["1:1"].pid).memory_info().rss


def test_a_job_printing_a_gigabyte_keeps_the_agent_small(hostile_grid):
    client = hostile_grid.client()
    # 1 GB of short lines (level 1 messages); only the DB logger keeps them, trimmed by size
    args = acclient.RunArgs(loglevels_db="20")  # the flood itself need not be stored: it is about memory
    script = "head -c 1000000000 /dev/zero | tr '\\0' 'x' | fold -w 1000; echo; echo 20::survived"
    before = agent_rss(hostile_grid)
    job = client.execute(1, 1, "bash", ["-c", script], args=args).get_next_result(240)
    assert (job.state, job.data) == ("SUCCESS", "survived")
    assert len(job.streams[0]) <= 1024 * 1024
    assert job.streams[0].endswith("x" * 1000 + "\nsurvived\n")
    assert agent_rss(hostile_grid) < before + 150 * 2**20
    assert builtin(client, "ping") == "pong"


def test_a_ten_megabyte_line_without_newline(hostile_grid):
    client = hostile_grid.client()
    job = client.execute(1, 1, "bash", ["-c", "head -c 10000000 /dev/zero | tr '\\0' 'y'"]).get_next_result(TIMEOUT)
    assert job.state == "SUCCESS"
    stdout = job.streams[0]
    assert len(stdout) <= 1024 * 1024 and set(stdout.strip()) == {"y"}
    stored = builtin(client, "get_msgs", {"jobid": job.id, "levels": "1", "limit": 100})
    assert len(stored) == 10  # cut into 1 MB messages, each stored cut to 64 KiB
    assert all(message["data"].endswith("more characters cut]") for message in stored)


def test_binary_garbage(hostile_grid):
    client = hostile_grid.client()
    job = client.execute(1, 1, "bash", ["-c", "head -c 3000000 /dev/urandom; echo; echo 20::ok"]).get_next_result(
        TIMEOUT)
    assert (job.state, job.data, job.level) == ("SUCCESS", "ok", 20)
    assert "\ufffd" in job.streams[0]  # undecodable bytes are replaced, not fatal
    assert builtin(client, "ping") == "pong"


def test_the_console_logger_writes_warnings_and_errors_to_the_agent_log(hostile_grid):
    client = hostile_grid.client()
    script = "echo 4::quiet; echo 9::the disk is on fire"
    job = client.execute(1, 1, "bash", ["-c", script], id="noisy").get_next_result(TIMEOUT)
    assert job.critical == "the disk is on fire"
    log = hostile_grid.log_path("agent-1-1")
    line = wait_until(lambda: [line for line in log.read_text().splitlines() if "job noisy" in line],
                    what="the console logger's line")
    assert len(line) == 1 and "ERROR" in line[0] and line[0].endswith("level 9: the disk is on fire")
