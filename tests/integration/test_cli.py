"""The real ``ac`` (a child process) against a real grid: what it prints, on which stream, and its exit status.

The grid: 1:1 (web, db) and 1:2 (web) with an AC logger (their output can be followed live), 2:1 (db) with the
default config (no AC logger), 2:2 (db) registered and then stopped: a dead member of role db.
"""

import json
import os
import re
import signal
import socket
import subprocess

import pytest
from cli_support import AC, UUID, Running, ac, environment
from support import TIMEOUT, wait_state, wait_until

from acgrid.launcher import AgentSpec, Grid
from protocol import keys

LIVE = {"logging": {"db": {"type": "DB", "log_dir": "logs"},
                    "ac": {"type": "AC", "levels": "2,4,7-9", "flush_int": 0.2}}}
FAST = {"agents": {"sweep_interval": 0.2}}


@pytest.fixture(scope="module")
def fleet():
    agents = [AgentSpec(1, 1, ("web", "db"), LIVE), AgentSpec(1, 2, ("web",), LIVE), AgentSpec(2, 1, ("db",)),
              AgentSpec(2, 2, ("db",))]
    with Grid(agents, heartbeat_interval=0.3, controller_config=FAST) as grid:
        grid.stop_agent("2:2")
        client = grid.client()
        wait_until(lambda: not next(a for a in client.list_agents() if (a["gid"], a["nid"]) == (2, 2))["alive"],
                   what="2:2 seen dead")
        yield grid


def one_line(ran) -> str:
    """The single ``ac: ...`` line a failure prints (and nothing else)."""
    assert len(ran.err_lines) == 1 and ran.err.startswith("ac: "), ran.err
    assert "Traceback" not in ran.err and not ran.out, (ran.out, ran.err)
    return ran.err_lines[0]


def test_agents_table_filters_count_line_and_options_anywhere(fleet):
    ran = ac(fleet.bus_url, "agents")
    assert ran.code == 0, ran.err
    assert ran.lines[0].split() == ["AGENT", "ROLES", "HOST", "ALIVE", "RUNNING", "JOBS", "VERSION", "UPTIME",
                                    "HEARTBEAT"]
    row = next(line for line in ran.lines if line.startswith("1:1 ")).split()
    assert row[:2] == ["1:1", "db,web"] and row[3] == "yes" and row[6] == "0.1.0"
    assert ran.lines[-1] == "4 agents: 3 alive, 1 dead"
    assert {(a["gid"], a["nid"]) for a in json.loads(ac(fleet.bus_url, "agents", "--json").out)} == \
        {(1, 1), (1, 2), (2, 1), (2, 2)}
    dead = ac(fleet.bus_url, "agents", "-r", "db", "--dead")
    assert [line.split()[0] for line in dead.lines[1:-1]] == ["2:2"] and dead.lines[-1] == \
        "1 agent (role db dead): 0 alive, 1 dead"
    assert ac(fleet.bus_url, "agents", "--version").out.startswith("ac (agentcontroller) 0.1.0")


def test_exec_on_one_node_prints_the_id_the_result_and_a_summary(fleet):
    ran = ac(fleet.bus_url, "exec", "-g", "1", "-n", "1", "--", "echo", "hello")
    assert ran.code == 0
    assert re.fullmatch(r"== 1:1 SUCCESS \(\d+ ms\)\nhello\n", ran.out), ran.out
    assert re.match(rf"job {UUID.pattern}: echo hello on 1:1\n", ran.err), ran.err
    assert re.fullmatch(r"summary: 1 targeted: 1 succeeded, 0 failed, 0 no reply \(\d+\.\d s\)", ran.summary())

    failed = ac(fleet.bus_url, "exec", "-g", "1", "-n", "1", "--shell", "echo oops >&2; exit 4")
    assert failed.code == 1 and re.match(r"== 1:1 ERROR \(\d+ ms\): exited with code 4", failed.out)
    assert "1:1: oops" in failed.err_lines and "  failed (1): 1:1" in failed.err_lines
    passthrough = ac(fleet.bus_url, "exec", "-g", "1", "-n", "1", "--retcode-passthrough", "--shell", "exit 7")
    assert passthrough.code == 7
    hidden = ac(fleet.bus_url, "exec", "-g", "1", "-n", "1", "--retcode-passthrough", "--shell", "echo 20::1; exit 5")
    assert hidden.code == 5, "a result message hides the exit text, not the job's exitcode"
    signalled = ac(fleet.bus_url, "exec", "-g", "1", "-n", "1", "--retcode-passthrough", "--shell", "kill -TERM $$")
    assert signalled.code == 128 + 15


def test_exit_status_tells_dead_nothing_matched_and_no_reply_apart(fleet):
    dead = ac(fleet.bus_url, "exec", "-g", "1", "-n", "9", "--", "true")
    assert dead.code == 3 and "== 1:9 ERROR: agent 1:9 is not alive" in dead.lines
    assert "  not alive (1): 1:9" in dead.err_lines
    nothing = ac(fleet.bus_url, "exec", "-r", "nosuch", "--fanout", "--", "true")
    assert nothing.code == 5 and nothing.out == ""
    assert nothing.summary().startswith("summary: nothing matched: no agent with role 'nosuch'")
    slow = ac(fleet.bus_url, "exec", "-g", "2", "-n", "1", "--timeout", "1", "--", "sleep", "5")
    assert slow.code == 4, slow.err
    assert "still running (1): 2:1" in slow.err and "no reply from" not in slow.err, "said once, not twice"


def test_a_fanout_with_a_dead_member_in_json_and_jsonl(fleet):
    ran = ac(fleet.bus_url, "exec", "-r", "db", "--fanout", "--json", "--shell", "echo 20::$AGENT_NID")
    answer = json.loads(ran.out)
    assert ran.code == 3 and answer["exit_code"] == 3
    assert sorted((job["gid"], job["nid"], job["outcome"], job["rc"]) for job in answer["results"]) == \
        [(1, 1, "succeeded", 0), (2, 1, "succeeded", 0), (2, 2, "not alive", None)]
    assert answer["summary"]["counts"]["not alive"] == 1 and answer["summary"]["agents"]["not alive"] == ["2:2"]
    lines = ac(fleet.bus_url, "--jsonl", "exec", "-r", "db", "--fanout", "--", "true")
    parsed = [json.loads(line) for line in lines.lines]
    assert lines.code == 3 and sorted(job["outcome"] for job in parsed) == ["not alive", "succeeded", "succeeded"]


def test_group_folds_identical_outputs(fleet):
    ran = ac(fleet.bus_url, "exec", "--all", "--group", "--shell", "echo same; [ $AGENT_NID = 2 ] && exit 3; true")
    assert ran.code == 3, "the worst: a dead agent (3) over a failed job (1)"
    assert ran.out == ("== 1:1 2:1 (2) SUCCESS\nsame\n"
                       "== 1:2 (1) ERROR: exited with code 3\nsame\n"
                       "== 2:2 (1) ERROR: agent 2:2 is not alive\n")
    assert re.fullmatch(r"summary: 4 targeted: 2 succeeded, 1 failed, 0 no reply, 1 not alive \(\d+\.\d s\)",
                        ran.summary())
    assert ran.err_lines[-2:] == ["  failed (1): 1:2", "  not alive (1): 2:2"]


def agents_of(ran) -> set[str]:
    assert ran.code in (0, 3), ran.err
    return {f"{job['gid']}:{job['nid']}" for job in map(json.loads, ran.lines)}


def test_targeting_flags(fleet):
    bus = fleet.bus_url
    assert agents_of(ac(bus, "exec", "--jsonl", "-t", "1:2,2:1", "--", "true")) == {"1:2", "2:1"}
    assert agents_of(ac(bus, "exec", "--jsonl", "-g", "1", "-n", "1,2", "--", "true")) == {"1:1", "1:2"}
    assert agents_of(ac(bus, "exec", "--jsonl", "-r", "web", "-r", "db", "--fanout", "--", "true")) == {"1:1"}
    assert agents_of(ac(bus, "exec", "--jsonl", "-r", "web", "--fanout", "-x", "1:2", "--", "true")) == {"1:1"}
    assert agents_of(ac(bus, "exec", "--jsonl", "--hosts", "*", "--fanout", "-x", "2:2", "--", "true")) == \
        {"1:1", "1:2", "2:1"}
    for argv, said in ((["-n", "1", "--", "true"], "give the grid too"),
                       (["-n", "1:2", "--", "true"], "an agent by GID:NID is -t 1:2"),
                       (["-r", "web", "--fanout", "--max-errors", "1", "--", "true"], "--batch"),
                       (["-g", "1", "-n", "1", "--"], "nothing to run"), (["--", "true"], "where should it run"),
                       (["1:2,1:3", "--", "true"], "where should it run? -g G -n N, -t G:N[,...], -r ROLE [--fanout], "
                        "--hosts PATTERN or --all (to run it on 1:2,1:3: -t 1:2,1:3)"),
                       (["-t", "1:1", "-r", "web", "--", "true"], "give no -g or -r")):
        ran = ac(bus, "exec", *argv)
        assert ran.code == 2 and said in one_line(ran), (argv, ran.err)


def test_rollout_flags_and_its_progress_in_ac_job(fleet):
    ran = ac(fleet.bus_url, "exec", "-r", "web", "--fanout", "--batch", "1", "--max-errors", "0", "--shell",
             "[ $AGENT_NID = 1 ] && exit 1; true")
    assert ran.code == 1 and "  skipped (1): 1:2" in ran.err_lines, ran.err
    assert ran.summary().startswith("summary: 2 targeted: 0 succeeded, 1 failed, 0 no reply, 1 skipped")
    job = ac(fleet.bus_url, "job", ran.job_id[:13])
    assert job.code == 1
    assert "== 1:2 SKIPPED: not started: the rollout stopped after 1 of 2 targets failed (max_errors 0)" in job.lines
    assert "rollout: 1 waves started (1 targets each), 1 failed so far (max_errors 0), 0 waiting for their wave, " \
           "1 skipped" in job.err_lines


def test_batch_wait_holds_the_next_wave_and_max_errors_takes_a_share(fleet):
    ran = ac(fleet.bus_url, "--jsonl", "exec", "-r", "web", "--fanout", "--batch", "1", "--batch-wait", "1",
             "--max-errors", "50%", "--shell", "[ $AGENT_NID = 1 ] && exit 1; true")
    first, second = sorted(map(json.loads, ran.lines), key=lambda job: job["starttime"])
    assert ran.code == 1 and sorted((first["outcome"], second["outcome"])) == ["failed", "succeeded"], \
        "one failure of two is within 50 %: the second wave ran"
    ended = first["starttime"] + first["time"]
    assert second["starttime"] >= ended + 1000, f"the second wave started {second['starttime'] - ended} ms after " \
        "the first ended, not the 1 s --batch-wait"


def test_shell_stdin_and_help(fleet):
    assert ac(fleet.bus_url, "exec", "-g", "1", "-n", "2", "--shell", "echo a b c | wc -w").lines[1] == "3"
    assert ac(fleet.bus_url, "exec", "-g", "1", "-n", "2", "--", "cat", input="from stdin\n").lines[1] == "from stdin"
    for argv in (["--help"], ["exec", "--help"]):
        text = ac(None, *argv).out
        assert "examples:" in text and "exit status" in text, argv
        assert all(re.search(rf"^ +{code}  ", text, re.M) for code in (0, 1, 2, 3, 4, 5, 6, 7, 8, 130)), text


def test_follow_prints_each_line_as_it_comes_prefixed_by_its_agent(fleet):
    go = fleet.agent_dir("1:1") / "go"
    running = Running(fleet.bus_url, "exec", "-t", "1:1", "--follow", "--shell",
                      "echo first; while [ ! -e $AGENT_HOME/go ]; do sleep 0.05; done; echo second >&2")
    try:
        assert running.next_line() == "1:1: first", "live: the job still runs, waiting for the file"
        go.touch()
        assert running.next_line() == "1:1: second"
        assert running.wait() == 0
    finally:
        go.unlink(missing_ok=True)
        running.process.kill()
    quiet = ac(fleet.bus_url, "exec", "-t", "2:1", "--follow", "--", "echo", "no AC logger here")
    assert quiet.code == 0 and quiet.out == "2:1: no AC logger here\n"
    assert "ac: no live output came from 2:1" in quiet.err


def test_logs_of_every_agent_a_dead_one_named_and_levels(fleet):
    sent = ac(fleet.bus_url, "exec", "--all", "--shell", "echo 3::note from $AGENT_NID; echo plain")
    logs = ac(fleet.bus_url, "logs", sent.job_id)
    assert logs.code == 3, logs.err
    assert one_line_err(logs) == "ac: 2:2: its messages cannot be read: agent 2:2 is not alive"
    notes = [line.split(None, 1)[1] for line in logs.lines]
    assert sorted(notes) == sorted([f"{agent}[3]: note from {agent[-1]}" for agent in ("1:1", "1:2", "2:1")]
                                   + [f"{agent}[1]: plain" for agent in ("1:1", "1:2", "2:1")])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", logs.lines[0].split()[0]), "a time people read"
    only = ac(fleet.bus_url, "logs", sent.job_id, "--levels", "3", "--utc")
    assert {line.split()[1][3:] for line in only.lines} == {"[3]:"} and len(only.lines) == 3
    assert all(line.split()[0].endswith("Z") for line in only.lines)


def one_line_err(ran) -> str:
    assert len(ran.err_lines) == 1, ran.err
    return ran.err_lines[0]


def test_logs_follow_honours_levels(fleet):
    go = fleet.agent_dir("1:2") / "go"
    sent = ac(fleet.bus_url, "exec", "--async", "-t", "1:2", "--shell",
              "echo 1::skip; echo 3::before; while [ ! -e $AGENT_HOME/go ]; do sleep 0.05; done; echo 3::after")
    assert sent.code == 0 and UUID.fullmatch(sent.out.strip())
    follow = Running(fleet.bus_url, "logs", "-f", sent.out.strip(), "--levels", "3")
    try:
        first = follow.next_line()
        assert first.endswith(" 1:2[3]: before"), first
        go.touch()
        assert follow.next_line().endswith(" 1:2[3]: after"), "live: --async asked the agent to send it"
        assert follow.wait() == 0 and follow.rest() == []
    finally:
        go.unlink(missing_ok=True)
        follow.process.kill()


def test_a_closed_pipe_ends_ac_quietly(fleet):
    sent = ac(fleet.bus_url, "exec", "-t", "1:1", "--shell", "for i in $(seq 1000); do echo \"3::$i $(printf "
              "'%0300d' 0)\"; done")
    assert sent.code == 0
    shell = subprocess.run(["bash", "-c", f"{' '.join(AC)} logs {sent.job_id} | head -1; echo rc=${{PIPESTATUS[0]}}"],
                           capture_output=True, text=True, timeout=2 * TIMEOUT, env=environment(fleet.bus_url),
                           stdin=subprocess.DEVNULL)
    first, status = shell.stdout.splitlines()
    assert " 1:1[3]: 1 000" in first and status == "rc=141", shell.stdout
    assert shell.stderr == "", "no traceback, nothing at all"


def test_ctrl_c_leaves_the_job_running_and_says_how_to_reach_it(fleet):
    running = Running(fleet.bus_url, "exec", "-t", "1:2", "--", "sleep", "60")
    line = running.next_line("err")
    command_id = re.match(r"job (\S+): sleep 60 on targets 1:2", line).group(1)
    client = fleet.client()
    wait_state(client, command_id, "RUNNING", agent=(1, 2))
    running.process.send_signal(signal.SIGINT)
    assert running.wait() == 130
    said = running.rest("err")
    assert said == [f"ac: interrupted: job {command_id} goes on (Ctrl-C stops ac, not the job)",
                    f"  follow it:    ac logs -f {command_id}", f"  wait for it:  ac wait {command_id}",
                    f"  kill it:      ac kill {command_id}"]
    assert client.get_cmd_jobs(command_id)[(1, 2)].state == "RUNNING", "the job goes on"
    killed = ac(fleet.bus_url, "kill", command_id)
    assert (killed.code, killed.out) == (0, f"killed {command_id} on 1:2\n")
    assert ac(fleet.bus_url, "wait", command_id).code == 1


def test_kill_and_wait_cover_every_agent_of_a_fanout_and_jobs_lists_them(fleet):
    client = fleet.client()
    sent = ac(fleet.bus_url, "exec", "--async", "-r", "web", "--fanout", "--shell",
              "[ $AGENT_NID = 1 ] || sleep 60")
    command_id = sent.out.strip()
    wait_state(client, command_id, "SUCCESS", agent=(1, 1))
    wait_state(client, command_id, "RUNNING", agent=(1, 2))
    killed = ac(fleet.bus_url, "kill", command_id[:8])
    assert killed.code == 0 and killed.lines == [f"{command_id} had already ended on 1:1: SUCCESS",
                                                 f"killed {command_id} on 1:2"], killed.err
    waited = ac(fleet.bus_url, "wait", command_id[:8], "--json")
    summary = json.loads(waited.out)["summary"]
    assert waited.code == 1 and summary["agents"] == {"succeeded": ["1:1"], "killed": ["1:2"]}

    jobs = ac(fleet.bus_url, "jobs", "--count", "50")
    row = next(line for line in jobs.lines if line.startswith(command_id))
    assert re.search(r" \d+s ago +role web fanout +execute sh -c .* KILLED 1, SUCCESS 1$", row), row
    assert not [line for line in jobs.lines if " controller " in line or "get_msgs" in line], "internal ones hidden"
    everything = ac(fleet.bus_url, "jobs", "--count", "50", "--all")
    assert any(" controller " in line for line in everything.lines) and "0:0" not in everything.out


def test_kill_of_a_rollout_kills_its_wave_and_starts_no_other(fleet):
    client = fleet.client()
    sent = ac(fleet.bus_url, "exec", "--async", "-r", "web", "--fanout", "--batch", "1", "--", "sleep", "60")
    command_id = sent.out.strip()
    wait_until(lambda: any(job.state == "RUNNING" and not job.dump().get("phase")
                           for job in client.get_cmd_jobs(command_id).values()), what="the first wave running")
    killed = ac(fleet.bus_url, "kill", command_id)
    assert killed.code == 0, (killed.out, killed.err)
    assert sorted(line.split(" on ")[0] for line in killed.lines) == \
        [f"{command_id} not started", f"killed {command_id}"], killed.lines
    assert any(line.endswith(": its rollout was stopped (SKIPPED)") for line in killed.lines)
    waited = json.loads(ac(fleet.bus_url, "wait", command_id, "--json").out)["summary"]["agents"]
    assert sorted(waited) == ["killed", "skipped"] and sorted(waited["killed"] + waited["skipped"]) == ["1:1", "1:2"]
    again = ac(fleet.bus_url, "kill", command_id)
    assert again.code == 1 and "is not running anywhere" in again.err


def test_id_prefixes_must_be_unambiguous(fleet):
    client = fleet.client()
    for suffix in ("a", "b"):
        client.cmd(1, 1, "ping", None, id=f"twin-{suffix}").get_next_result(TIMEOUT)
    assert ac(fleet.bus_url, "job", "twin-a").code == 0
    ambiguous = ac(fleet.bus_url, "job", "twin")
    assert ambiguous.code == 2 and "is the start of 2 commands' ids (twin-b, twin-a)" in one_line(ambiguous)
    unknown = ac(fleet.bus_url, "wait", "no-such")
    assert unknown.code == 2 and one_line(unknown).startswith("ac: no command no-such")


def test_no_controller_no_redis_and_doctor(make_grid):
    grid = make_grid([AgentSpec(1, 1), AgentSpec(1, 2)], heartbeat_interval=0.3, controller_config=FAST)
    grid.stop_agent("1:2")
    wait_until(lambda: not grid.redis.exists(keys.AgentKeys(1, 2).alive), what="1:2's heartbeat gone")
    grid.redis.config_set("appendonly", "no")
    grid.stop_controller(0)
    wait_until(lambda: not grid.redis.exists(keys.CONTROLLER_ALIVE), what="no controller alive")

    for argv in (["agents"], ["exec", "-g", "1", "-n", "1", "--", "true"]):
        ran = ac(grid.bus_url, *argv)
        assert ran.code == 7 and ran.seconds < 5, (ran.code, ran.seconds)
        assert one_line(ran).startswith(f"ac: no controller is alive on {grid.bus_url}: nothing was sent")
    assert grid.redis.llen(keys.CMDS_QUEUE) == 0, "nothing waits to run hours later"

    doctor = ac(grid.bus_url, "doctor")
    assert doctor.code == 7, doctor.out
    found = {line.split()[1]: line for line in doctor.lines}
    assert found["reach"].startswith("ok") and found["controller"].startswith("FAIL")
    assert found["persistence"].startswith("warn") and "appendonly no" in found["persistence"]
    assert found["agents"].startswith("warn") and "1 of 2 agents down: 1:2" in found["agents"]
    assert "ac agents forget" in found["agents"] and "systemctl start ac-controller" in found["controller"]
    assert found["memory"].startswith("warn") and set(found) >= {"tls", "queue", "deadletters", "acl"}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = ac(f"redis://127.0.0.1:{port}/0", "agents")
    assert gone.code == 6 and gone.seconds < 5
    assert one_line(gone) == (f"ac: cannot reach the bus at redis://127.0.0.1:{port}/0: connection refused: is "
                              "Redis running there? (the bus is --bus URL or $AC_BUS)")
    assert ac("localhost:6379", "agents").code == 2


def test_the_entry_point_runs_as_a_module_and_as_the_script():
    script = os.path.join(os.path.dirname(AC[0]), "ac")
    for argv in ([*AC, "--version"], [script, "exec", "--version"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0 and done.stdout.startswith("ac (agentcontroller) "), argv


def test_a_progress_line_with_failures_and_elapsed_time_ends_with_a_newline(fleet):
    ran = ac(fleet.bus_url, "exec", "--all", "--progress", "--", "true")
    assert ran.code == 3
    assert re.search(r"\] 4/4 done, 1 failed, \d+\.\d s\nsummary: ", ran.err), ran.err


def test_agents_forget_drops_a_dead_one_and_refuses_a_live_one(fleet):  # last: the fleet loses 2:2
    ran = ac(fleet.bus_url, "agents", "forget", "2:2")
    assert (ran.code, ran.out) == (0, "forgot 2:2\n"), ran.err
    alive = ac(fleet.bus_url, "agents", "forget", "1:1")
    assert alive.code == 1 and one_line_err(alive).startswith("ac: 1:1: ") and "alive" in alive.err
    assert ac(fleet.bus_url, "agents").lines[-1] == "3 agents: 3 alive, 0 dead"
