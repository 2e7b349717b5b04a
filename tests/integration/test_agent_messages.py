"""Output levels through the loggers (DB, AC), get_msgs, statsd and job stats, on a real agent."""

import json
import time

import pytest
from support import TIMEOUT, builtin, wait_state, wait_until

import acclient
from acgrid.launcher import AgentSpec, Grid
from protocol import keys

LOGGING = {"db": {"type": "DB", "log_dir": "logs", "levels": "*"},
           "ac": {"type": "AC", "flush_int": 0.2, "batch_size": 100, "levels": "4,7-9"}}

STATSD = ["g:5|g", "g:+2|g", "hits:1|c", "hits:2|c", "lat:10|ms", "lat:20|ms", "who:a|s", "who:b|s", "who:a|s",
          "mood:calm|kv", "mood:happy|kv"]


@pytest.fixture(scope="module")
def logging_grid():
    with Grid([AgentSpec(1, 1, config={"logging": LOGGING, "main": {"kill_grace": 1}})],
              heartbeat_interval=0.3) as grid:
        yield grid


def ac_messages(grid, job_id):
    return [message for message in (json.loads(raw) for raw in grid.redis.lrange(keys.agent_logs(1, 1), 0, -1))
            if message["jobid"] == job_id]


def test_get_msgs_filters_newest_first(logging_grid):
    client = logging_grid.client()
    script = "for i in $(seq 1 1200); do echo 4::line $i; done; echo 7::careful; echo plain; echo 20::{}"
    before = time.time()
    job = client.execute(1, 1, "bash", ["-c", script], id="chatty").get_next_result(TIMEOUT)
    assert job.state == "SUCCESS"
    everything = builtin(client, "get_msgs", {"jobid": "chatty", "limit": 5000})
    assert len(everything) == 1000  # never more than 1000
    assert [message["data"] for message in everything[:4]] == ["{}", "plain", "careful", "line 1200"]
    assert [message["id"] for message in everything] == sorted((message["id"] for message in everything),
                                                               reverse=True)
    assert set(everything[0]) == {"id", "jobid", "domain", "name", "epoch", "level", "data"}
    assert builtin(client, "get_msgs", {"jobid": "chatty"})[0]["data"] == "{}"  # default limit: 20
    assert len(builtin(client, "get_msgs", {"jobid": "chatty"})) == 20
    by_string = builtin(client, "get_msgs", {"jobid": "chatty", "levels": "1,7", "limit": 10})
    by_list = builtin(client, "get_msgs", {"jobid": "chatty", "levels": [1, 7], "limit": 10})
    assert [message["data"] for message in by_string] == [message["data"] for message in by_list] == \
        ["plain", "careful"]
    window = builtin(client, "get_msgs", {"jobid": "chatty", "timefrom": int(before) - 1, "timeto": time.time() + 1,
                                          "levels": "20"})
    assert [message["data"] for message in window] == ["{}"]
    assert builtin(client, "get_msgs", {"jobid": "chatty", "timeto": int(before) - 10}) == []


def test_loglevels_db_and_loglevels_ac_override_the_loggers(logging_grid):
    client = logging_grid.client()
    script = "echo plain; echo 4::operators; echo 9::fatal; echo 20::result"
    plain = client.execute(1, 1, "bash", ["-c", script], id="levels-default").get_next_result(TIMEOUT)
    assert plain.state == "SUCCESS"
    assert [m["level"] for m in builtin(client, "get_msgs", {"jobid": "levels-default"})] == [20, 9, 4, 1]
    assert sorted(m["level"] for m in ac_messages(logging_grid, "levels-default")) == [4, 9]  # the AC logger's own
    args = acclient.RunArgs(loglevels_db="20", loglevels_ac=[1, 20])
    client.execute(1, 1, "bash", ["-c", script], args=args, id="levels-override").get_next_result(TIMEOUT)
    assert [m["level"] for m in builtin(client, "get_msgs", {"jobid": "levels-override"})] == [20]
    assert sorted(m["level"] for m in ac_messages(logging_grid, "levels-override")) == [1, 20]
    kept = acclient.RunArgs(loglevels="1,4")
    job = client.execute(1, 1, "bash", ["-c", script], args=kept, id="levels-kept").get_next_result(TIMEOUT)
    assert (job.data, job.level, job.critical) == ("result", 20, "fatal")  # taken before loglevels filters
    assert [m["level"] for m in builtin(client, "get_msgs", {"jobid": "levels-kept"})] == [4, 1]
    assert [m["level"] for m in ac_messages(logging_grid, "levels-kept")] == [4]


def test_statsd_values_and_samples_reach_the_controller_and_the_stats_builtins(logging_grid):
    client = logging_grid.client()
    lines = "; ".join(f"echo '10::{line}'" for line in STATSD)
    script = f"{lines}; echo '10::not statsd'; while :; do :; done"  # then burn cpu
    args = acclient.RunArgs(stats_interval=1, domain="tests", name="bash")
    cmd = client.execute(1, 1, "bash", ["-c", script], args=args, id="measured")
    wait_state(client, "measured", "RUNNING")
    stats_key = keys.job_stats(1, 1)
    flushed = json.loads(wait_until(lambda: logging_grid.redis.hget(stats_key, "measured"), what="a stats flush"))
    assert flushed["statsd"] == {
        "g": {"type": "g", "value": 7.0}, "hits": {"type": "c", "value": 3.0},
        "lat": {"type": "ms", "value": 15.0, "count": 2}, "who": {"type": "s", "value": 2},
        "mood": {"type": "kv", "value": "happy"}}
    assert flushed["samples"] >= 1 and flushed["rss"] > 0 and flushed["cpu"] > 1
    assert (flushed["id"], flushed["gid"], flushed["nid"], flushed["name"]) == ("measured", 1, 1, "bash")
    process = builtin(client, "get_process_stats", {"id": "measured"})
    assert set(process) == {"cmd", "cpu", "rss", "vms", "swap"}
    assert process["cmd"]["id"] == "measured" and process["rss"] > 0 and process["vms"] >= process["rss"]
    assert [stats["cmd"]["id"] for stats in builtin(client, "get_processes_stats", {"domain": "tests"})] == \
        ["measured"]
    assert builtin(client, "get_processes_stats", {"name": "other"}) == []
    total = builtin(client, "get_aggregated_stats")
    assert total["jobs"] == 1 and total["rss"] >= process["rss"]
    warnings = builtin(client, "get_msgs", {"jobid": "measured", "levels": "7"})
    assert [message["data"] for message in warnings] == ["statsd: 'not statsd' is not 'key:value|type'"]
    builtin(client, "kill", {"id": "measured"})
    assert cmd.get_next_result(TIMEOUT).state == "KILLED"
    wait_until(lambda: not logging_grid.redis.hexists(stats_key, "measured"), what="the stats dropped with the job")


def test_node_info_builtins(logging_grid):
    client = logging_grid.client()
    cpus = builtin(client, "get_cpu_info")
    assert isinstance(cpus, list) and cpus and {"cpu", "model_name", "mhz", "cores"} <= set(cpus[0])
    assert builtin(client, "get_mem_info")["total"] > 0
    disks = builtin(client, "get_disk_info")
    assert any(disk["mountpoint"] == "/" for disk in disks)
    assert any(nic["name"] == "lo" for nic in builtin(client, "get_nic_info"))
    os_info = builtin(client, "get_os_info")
    assert set(os_info) == {"hostname", "uptime", "boot_time", "procs", "os", "platform", "platform_family",
                            "platform_version", "virtualization_system", "virtualization_role"}
    assert os_info["os"] == "linux" and os_info["procs"] > 0 and os_info["uptime"] >= 0
