"""The real 2015 client (``../shared/legacy/acclient_2015.py``, Python 2), ported to Python 3 at run time by
lib2to3's fixers alone, drives a real grid: a program written for it works unchanged.

Every call goes through the 2015 client's own public methods. The module runs twice: against agents with
the grid's default loggers, and against agents whose loggers all have ``levels = []`` (every level, as in
the 2015 agent).
"""

import copy
import json
import os
import socket
import time

import psutil
import pytest
from legacy_client import (
    LEGACY_CLIENT,
    POLL_INTERVAL,
    bounded,
    load,
    take_job,
    watch_state,
)
from support import TIMEOUT, wait_until

from acgrid.echo import EchoServer, echo_through
from acgrid.launcher import AgentSpec, Grid

if not LEGACY_CLIENT.is_file():
    pytest.skip(f"the 2015 client is not there ({LEGACY_CLIENT} is missing: a clone outside this setup)",
                allow_module_level=True)

FINAL = {"SUCCESS", "ERROR", "TIMEOUT", "KILLED", "UNKNOWN_CMD", "DUPLICATE_ID", "SKIPPED"}
#: A job that answers, as its level-20 result, the agent it ran on.
WHO = ["-c", "echo 20::$AGENT_GID:$AGENT_NID"]
WEB, DB, ALL = {(1, 1), (1, 2)}, {(1, 1), (2, 1)}, {(1, 1), (1, 2), (2, 1), (3, 1)}

#: The two logger setups the module runs against, merged into every agent's agent2.toml.
LOGGERS = {
    "default-loggers": {},
    "empty-levels": {"logging": {"db": {"type": "DB", "log_dir": "logs", "levels": []},
                                 "ac": {"type": "AC", "levels": []},
                                 "console": {"type": "console", "levels": []}}},
}


@pytest.fixture(scope="module")
def legacy():
    """The 2015 client module, freshly ported."""
    return load()


@pytest.fixture(scope="module", params=sorted(LOGGERS))
def legacy_grid(request):
    """Agents 1:1 (web, db), 1:2 (web), 2:1 (db) and 3:1 (no role, max_jobs 1). Each serves ``jumpscript``
    (the 2015 client's name for execute_jumpscript) and ``execute_js_py`` with the jumpscript runner, as
    every agent of the local grid does; the script is put into each agent's scripts folder."""
    config = LOGGERS[request.param]
    agents = [AgentSpec(1, 1, ("web", "db"), copy.deepcopy(config)),
              AgentSpec(1, 2, ("web",), copy.deepcopy(config)),
              AgentSpec(2, 1, ("db",), copy.deepcopy(config)),
              AgentSpec(3, 1, (), {**copy.deepcopy(config), "main": {"max_jobs": 1}})]
    with Grid(agents) as grid:
        for name in grid.agent_specs:
            demo = grid.agent_dir(name) / "scripts" / "demo"
            demo.mkdir()
            (demo / "add.py").write_text("def action(data):\n    return data['a'] + data['b']\n")
        yield grid


@pytest.fixture(scope="module")
def client(legacy, legacy_grid):
    return legacy.Client(legacy_grid.address.host, legacy_grid.address.port)


@pytest.fixture(scope="module")
def echo():
    with EchoServer() as server:
        yield server


def next_result(cmd, timeout: float = TIMEOUT):
    """``cmd.get_next_result(timeout)``. When nothing comes, the 2015 client fails unpacking BLPOP's None
    (a TypeError): say what did not come instead."""
    try:
        return cmd.get_next_result(timeout)
    except TypeError as exc:
        if "NoneType" not in str(exc):
            raise
        raise AssertionError(f"no result of {cmd.cmd} {cmd.id} within {timeout} s") from exc


def all_results(cmd) -> list:
    """Every result through the 2015 ``iter_results`` (which waits without a timeout: bounded here)."""
    def iter_results():
        return list(cmd.iter_results())
    return bounded(iter_results)


def msgs(client, gid: int, nid: int, **query) -> list[dict]:
    """``client.get_msgs`` (which waits without a timeout: bounded here)."""
    return bounded(client.get_msgs, gid, nid, **query)


def ran_on(job) -> tuple[int, int]:
    """The agent a ``WHO`` job ran on, checked against what the job itself printed."""
    assert (job.state, job.level, job.data) == ("SUCCESS", 20, f"{job.gid}:{job.nid}")
    return job.gid, job.nid


def wait_sampled(client, cmd) -> dict:
    """``cmd``'s entry in ``get_processes(1, 1)`` once its process runs: the agent lists a job as soon as it
    has it, with zero memory until the process is there to measure (nothing the 2015 client can wait on)."""
    def sampled():
        return [entry for entry in client.get_processes(1, 1) if entry["cmd"]["id"] == cmd.id and entry["rss"]]
    [entry] = wait_until(sampled, what=f"job {cmd.id} to show in get_processes with its memory",
                          interval=POLL_INTERVAL)
    return entry


# -- the port ------------------------------------------------------------------------------------------------


def test_the_client_is_the_2015_one_ported_mechanically(legacy):
    assert legacy.__file__ == str(LEGACY_CLIENT)
    assert legacy.CMD_EXECUTE_JUMPSCRIPT == "jumpscript" and legacy.GET_INFO_TIMEOUT == 60
    levels = [*range(1, 10), *range(20, 24), 30]
    assert levels == legacy.LEVELS, "range(1, 10) + range(20, 24) + [30], a list once ported"
    assert legacy.RunArgs(loglevels_db="1").dump() == {"loglevels": "*", "loglevels_db": "1"}
    assert not hasattr(legacy.Cmd, "kill"), "the 2015 Cmd kills nothing: its Job does"


# -- execute -------------------------------------------------------------------------------------------------


def test_plain_ls_succeeds_without_data(client):
    cmd = client.execute(1, 1, "ls", ["-l", "/"])
    job = next_result(cmd)
    assert (job.state, job.level, job.data) == ("SUCCESS", 0, "")
    assert (job.id, job.gid, job.nid, job.cmd) == (cmd.id, 1, 1, "execute")
    assert (job.args.name, job.args.args) == ("ls", ["-l", "/"])
    assert job.starttime > 0 and job.time >= 0


def test_the_seed_example_a_tagged_block_is_the_result(client):
    cmd = client.execute(1, 1, "bash", ["-c", "echo 20::: && ls -l / && echo :::"])
    job = next_result(cmd)
    assert (job.state, job.level) == ("SUCCESS", 20)
    lines = job.data.splitlines()
    assert lines[0].startswith("total"), job.data
    assert {"etc", "usr"} <= {line.split()[-1] for line in lines[1:]}, job.data


def test_data_reaches_stdin_as_the_json_the_client_sent(client):
    cmd = client.execute(1, 1, "bash", ["-c", 'read l; echo 20:::; echo "$l"; echo :::'], data={"a": 1})
    job = next_result(cmd)
    assert (job.state, job.level) == ("SUCCESS", 20)
    assert job.data == json.dumps({"a": 1})


def test_loglevels_db_keeps_stdout_for_get_msgs(client, legacy):
    """The usage page: RunArgs(loglevels_db='1'), then the job's get_msgs shows what it printed."""
    cmd = client.execute(1, 1, "bash", ["-c", "ls -l /"], args=legacy.RunArgs(loglevels_db="1"))
    job = next_result(cmd)
    assert job.state == "SUCCESS"
    found = bounded(job.get_msgs, limit=100)
    assert found, "get_msgs found none of the job's stdout"
    assert {message["level"] for message in found} == {1}
    assert {message["jobid"] for message in found} == {cmd.id}
    assert found[-1]["data"].startswith("total"), found[-1]  # newest first: the first line is last
    assert {"etc", "usr"} <= {message["data"].split()[-1] for message in found[:-1]}


def test_loglevels_narrowing_keeps_the_result(client, legacy):
    cmd = client.execute(1, 1, "bash", ["-c", "echo plain; echo 20::r"], args=legacy.RunArgs(loglevels="1"))
    job = next_result(cmd)
    assert (job.state, job.data, job.level) == ("SUCCESS", "r", 20)
    kept = msgs(client, 1, 1, jobid=cmd.id)
    assert [(message["level"], message["data"]) for message in kept] == [(1, "plain")], "loglevels='1' keeps level 1"


def test_max_time_ends_in_timeout(client, legacy):
    cmd = client.execute(1, 1, "sleep", ["30"], args=legacy.RunArgs(max_time=1))
    job = next_result(cmd)
    assert job.state == "TIMEOUT"
    assert 1000 <= job.time < 20_000, job.time


# -- routing -------------------------------------------------------------------------------------------------


def test_role_routing(client):
    assert ran_on(next_result(client.execute(1, None, "bash", WHO, role="web"))) in WEB
    assert ran_on(next_result(client.execute(1, None, "bash", WHO, role="db"))) == (1, 1)
    assert ran_on(next_result(client.execute(2, None, "bash", WHO, role="db"))) == (2, 1)
    assert ran_on(next_result(client.execute(None, None, "bash", WHO, role="db"))) in DB
    assert ran_on(next_result(client.execute(None, None, "bash", WHO, role="*"))) in ALL


def test_role_routing_spreads_over_the_agents_of_a_role(client):
    """The least busy agent of the role gets each command: four sleeps to role web land on both agents."""
    cmds = [client.execute(None, None, "bash", ["-c", "sleep 1; echo 20::$AGENT_GID:$AGENT_NID"], role="web")
            for _ in range(4)]
    assert {ran_on(next_result(cmd)) for cmd in cmds} == WEB


@pytest.mark.parametrize(("gid", "role", "expected"), [(None, "web", WEB), (None, "*", ALL), (1, "db", {(1, 1)}),
                                                       (2, "db", {(2, 1)})])
def test_fanout_gives_one_result_per_target(client, gid, role, expected):
    cmd = client.execute(gid, None, "bash", WHO, role=role, fanout=True)
    results = all_results(cmd)
    assert sorted(ran_on(job) for job in results) == sorted(expected)
    assert set(cmd.get_jobs()) == expected


def test_fanout_to_no_agent_is_one_error(client):
    cmd = client.execute(2, None, "bash", WHO, role="web", fanout=True)
    results = all_results(cmd)
    assert [(job.state, job.data) for job in results] == [("ERROR", "no agent with role 'web' in grid 2")]


# -- results and history -------------------------------------------------------------------------------------


def test_jobs_of_a_command_and_the_history(client):
    cmd = client.execute(None, None, "bash", WHO, role="web", fanout=True)
    assert len(all_results(cmd)) == 2
    for jobs in (cmd.get_jobs(), client.get_cmd_jobs(cmd.id), client.get_by_id(1, 1, cmd.id).get_jobs()):
        assert set(jobs) == WEB
        for agent, job in jobs.items():
            assert (job.id, job.state, job.data) == (cmd.id, "SUCCESS", "{}:{}".format(*agent))

    newest = client.get_cmds(0, 1)
    assert [entry["id"] for entry in newest] == [cmd.id]
    [entry] = [entry for entry in client.get_cmds() if entry["id"] == cmd.id]
    assert (entry["cmd"], entry["role"], entry["fanout"], entry["args"]["args"]) == ("execute", "web", True, WHO)
    assert {(job.gid, job.nid): job.state for job in entry["jobs"]} == {(1, 1): "SUCCESS", (1, 2): "SUCCESS"}


# -- messages ------------------------------------------------------------------------------------------------


def test_get_msgs_filters(client):
    cmd = client.execute(1, 1, "bash", ["-c", "echo plain; echo 3::for users; echo 7::a warning; echo 4::ops"])
    assert next_result(cmd).state == "SUCCESS"
    kept = msgs(client, 1, 1, jobid=cmd.id)
    assert [(message["level"], message["data"]) for message in kept] == \
        [(4, "ops"), (7, "a warning"), (3, "for users"), (1, "plain")], "every level kept, newest first"
    assert {"id", "jobid", "domain", "name", "epoch", "level", "data"} <= set(kept[0])
    epoch = kept[0]["epoch"]
    assert abs(epoch - time.time()) < 600, "epoch is in seconds"

    assert [message["data"] for message in msgs(client, 1, 1, jobid=cmd.id, levels="3,7")] == ["a warning", "for users"]
    assert [message["data"] for message in msgs(client, 1, 1, jobid=cmd.id, levels="1-3")] == ["for users", "plain"]
    assert [message["data"] for message in msgs(client, 1, 1, jobid=cmd.id, limit=2)] == ["ops", "a warning"]
    bracket = msgs(client, 1, 1, jobid=cmd.id, timefrom=epoch - 60, timeto=epoch + 60, levels="*", limit=100)
    assert len(bracket) == 4
    assert msgs(client, 1, 1, jobid=cmd.id, timefrom=epoch + 3600) == []
    assert msgs(client, 1, 1, jobid=cmd.id, timeto=epoch - 3600) == []
    assert msgs(client, 1, 1, jobid="no-such-job") == []


def test_every_level_a_job_prints_is_kept(client):
    """Both logger setups keep every level in the message DB (the grid's default; levels = [] means all)."""
    script = "; ".join(f"echo {level}::level {level}" for level in (*range(2, 10), 20, 21, 30)) + "; echo plain"
    cmd = client.execute(1, 1, "bash", ["-c", script])
    job = next_result(cmd)
    assert (job.state, job.level, job.data) == ("SUCCESS", 30, "level 30")
    kept = msgs(client, 1, 1, jobid=cmd.id, limit=100)
    assert kept, "get_msgs is empty for a job that printed"
    assert sorted(message["level"] for message in kept) == [1, *range(2, 10), 20, 21, 30]


# -- info ----------------------------------------------------------------------------------------------------


def test_info_calls(client):
    cpus = client.get_cpu_info(1, 1)
    assert len(cpus) == psutil.cpu_count() and {"cpu", "model_name", "cores", "flags"} <= set(cpus[0])
    memory = client.get_mem_info(1, 1)
    assert {"total", "available", "percent", "used", "free", "swap"} <= set(memory)
    assert memory["total"] == psutil.virtual_memory().total
    disks = client.get_disk_info(1, 1)
    assert isinstance(disks, list)
    for disk in disks:
        assert {"device", "mountpoint", "fstype", "usage"} <= set(disk)
    assert {nic["name"] for nic in client.get_nic_info(1, 1)} >= {"lo"}
    system = client.get_os_info(1, 1)
    assert (system["hostname"], system["os"]) == (socket.gethostname(), "linux")
    assert system["uptime"] > 0 and system["procs"] > 0 and {"platform", "platform_version"} <= set(system)
    assert client.get_os_info(2, 1)["hostname"] == socket.gethostname()


def test_get_processes(client, legacy):
    cmd = client.execute(1, 1, "sleep", ["30"], args=legacy.RunArgs(domain="legacy-processes"))
    job = take_job(cmd, (1, 1))
    entry = wait_sampled(client, cmd)
    assert {"cpu", "rss", "vms", "swap"} <= set(entry) and entry["vms"] >= entry["rss"] > 0
    assert (entry["cmd"]["args"]["domain"], entry["cmd"]["args"]["name"]) == ("legacy-processes", "sleep")
    assert [item["cmd"]["id"] for item in client.get_processes(1, 1, domain="legacy-processes")] == [cmd.id]
    assert client.get_processes(1, 1, domain="no-such-domain") == []
    assert next_result(job.kill()).state == "SUCCESS"
    assert next_result(cmd).state == "KILLED"


# -- long-running, recurring ---------------------------------------------------------------------------------


def test_a_long_running_job_is_running_has_stats_and_is_killed(client, legacy):
    cmd = client.execute(1, 1, "sleep", ["600"], args=legacy.RunArgs(max_time=-1))
    job = take_job(cmd, (1, 1))
    assert job.state == "RUNNING"
    wait_sampled(client, cmd)
    stats = job.get_stats()
    assert {"cpu", "rss", "vms", "swap"} <= set(stats) and stats["rss"] > 0
    assert job.state == "RUNNING" and job.args.max_time == -1

    killer = job.kill()
    assert isinstance(killer, legacy.Cmd) and killer.cmd == "kill"
    answer = next_result(killer)
    assert (answer.state, json.loads(answer.data)) == ("SUCCESS", {"killed": [cmd.id]})
    assert watch_state(job, FINAL)[-1] == "KILLED", "the Job taken while RUNNING reads its end"
    assert next_result(cmd).state == "KILLED", "the first result of a long-running job is its end"


def test_recurring_job_runs_again_until_killed(client, legacy):
    cmd = client.execute(1, 1, "bash", ["-c", "echo 20::tick"], args=legacy.RunArgs(recurring_period=1))
    for _ in range(2):
        run = next_result(cmd)
        assert (run.id, run.state, run.data) == (cmd.id, "SUCCESS", "tick")
    between = client.get_cmd_jobs(cmd.id)[(1, 1)]  # between two runs the job has not ended: it says RUNNING
    assert between._jobdata["state"] == "RUNNING", between._jobdata
    answer = next_result(client.cmd(1, 1, "kill", legacy.RunArgs(), {"id": cmd.id}))
    assert (answer.state, json.loads(answer.data)) == ("SUCCESS", {"killed": [cmd.id]})
    states = []
    while not states or states[-1] == "SUCCESS":  # a run may have ended between the last read and the kill
        states.append(next_result(cmd).state)
        assert len(states) < 5, states
    assert states[-1] == "KILLED", states
    assert client.get_cmd_jobs(cmd.id)[(1, 1)].state == "KILLED"
    assert between.state == "KILLED", "the Job read between two runs sees the end"


# -- a Job read before it ends -------------------------------------------------------------------------------


def test_a_job_taken_right_after_sending_reads_its_end(client):
    cmd = client.execute(1, 1, "bash", ["-c", "sleep 2; echo 20::done"])
    job = take_job(cmd, (1, 1))
    seen = watch_state(job, FINAL)
    assert seen == ["RUNNING", "SUCCESS"], seen
    assert (job.data, job.level) == ("done", 20)


def test_a_job_waiting_for_its_serial_queue_reads_its_end(client, legacy):
    first = client.execute(1, 1, "sleep", ["2"], args=legacy.RunArgs(queue="legacy-serial"))
    second = client.execute(1, 1, "bash", ["-c", "echo 20::second"], args=legacy.RunArgs(queue="legacy-serial"))
    job = take_job(second, (1, 1))
    seen = watch_state(job, FINAL)
    assert seen == ["RUNNING", "SUCCESS"], seen
    assert job.data == "second"
    assert client.get_cmd_jobs(first.id)[(1, 1)].state == "SUCCESS", "the queue ran the first job first"


def test_a_job_waiting_for_a_slot_reads_its_end(client):
    """Agent 3:1 runs one job at a time (max_jobs 1): the second waits for the first's slot."""
    busy = client.execute(3, 1, "sleep", ["2"])
    take_job(busy, (3, 1))
    waiting = client.execute(3, 1, "bash", ["-c", "echo 20::slot"])
    job = take_job(waiting, (3, 1))
    seen = watch_state(job, FINAL)
    assert seen == ["RUNNING", "SUCCESS"], seen
    assert job.data == "slot"
    assert client.get_cmd_jobs(busy.id)[(3, 1)].state == "SUCCESS", "the slot was free only once the first ended"


# -- jumpscripts ---------------------------------------------------------------------------------------------


def test_execute_jumpscript(client, legacy):
    cmd = client.execute_jumpscript(1, 1, "demo", "add", data={"a": 2, "b": 3})
    assert cmd.cmd == legacy.CMD_EXECUTE_JUMPSCRIPT == "jumpscript"
    job = next_result(cmd)
    assert (job.state, job.level) == ("SUCCESS", 20), job.data
    assert json.loads(job.data) == 5


def test_execute_jumpscript_fanout_and_the_usage_page_name(client, legacy):
    cmd = client.execute_jumpscript(None, None, "demo", "add", data={"a": 20, "b": 1}, role="web", fanout=True)
    results = all_results(cmd)
    assert sorted((job.gid, job.nid, job.state, job.data) for job in results) == \
        [(1, 1, "SUCCESS", "21"), (1, 2, "SUCCESS", "21")]
    job = next_result(client.cmd(2, 1, "execute_js_py", legacy.RunArgs(domain="demo", name="add"), {"a": 1, "b": 1}))
    assert (job.state, json.loads(job.data)) == ("SUCCESS", 2)


# -- tunnels -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gateway", ["1.2", "controller"])
def test_tunnels(client, echo, gateway):
    opened = client.tunnel_open(1, 1, 0, gateway, "127.0.0.1", echo.port)
    assert opened["local"] > 0
    assert opened == {"local": opened["local"], "gateway": gateway, "ip": "127.0.0.1", "remote": echo.port}
    with socket.create_connection(("127.0.0.1", opened["local"]), timeout=TIMEOUT) as sock:
        message = b"hello from 2015 " + os.urandom(16).hex().encode()
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        assert b"".join(iter(lambda: sock.recv(4096), b"")) == message
    transfer = echo_through(opened["local"], 1_000_000)
    assert transfer.intact, transfer
    assert [item["local"] for item in client.tunnel_list(1, 1)] == [opened["local"]]
    assert client.tunnel_close(1, 1, opened["local"], gateway, "127.0.0.1", echo.port) is None
    assert client.tunnel_list(1, 1) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", opened["local"]), timeout=TIMEOUT).close()

