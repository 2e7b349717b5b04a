"""A swarm: one agent process hosting many agent identities (``ac-agent --swarm K``)."""

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest
from support import TIMEOUT, builtin

from acgrid.launcher import AgentSpec, GridError
from protocol import keys

SIZE = 12
SWARM = AgentSpec(1, 1, ("swarm",), swarm=SIZE)


@pytest.fixture
def swarm_grid(make_grid):
    return make_grid([SWARM, AgentSpec(2, 1, ("swarm",))], heartbeat_interval=0.3)


def test_every_member_is_a_full_agent_on_the_wire(swarm_grid):
    client = swarm_grid.client()
    members = {(1, nid) for nid in range(1, SIZE + 1)}
    assert {(agent["gid"], agent["nid"]) for agent in client.list_agents()} == members | {(2, 1)}
    pids = {swarm_grid.redis.hget(keys.AGENTS, keys.agent_name(gid, nid)) for gid, nid in members}
    assert len({json.loads(raw)["pid"] for raw in pids}) == 1, "one process hosts them all"

    fanout = client.cmd(None, None, "ping", None, role="swarm", fanout=True)
    answered = {(job.gid, job.nid): json.loads(job.data) for job in fanout.iter_results(timeout=TIMEOUT)}
    assert answered == {agent: "pong" for agent in members | {(2, 1)}}

    job = client.execute(1, 7, "bash", ["-c", 'echo "3::node $AGENT_NID"']).get_next_result(TIMEOUT)
    assert (job.state, job.nid) == ("SUCCESS", 7)
    assert [message["data"] for message in client.get_msgs(1, 7, jobid=job.id)] == ["node 7"]
    assert client.get_msgs(1, 8, jobid=job.id) == [], "each member keeps its own message DB"
    assert builtin(client, "get_msgs", {"jobid": job.id}, agent=(1, 1)) == []


def test_restart_restarts_every_member_and_a_signal_stops_them_all(swarm_grid):
    client = swarm_grid.client()
    process = psutil.Process(swarm_grid.agents["1:1"].pid)
    with swarm_grid.redis.pubsub(ignore_subscribe_messages=True) as events:
        events.subscribe(keys.EVENTS)
        assert builtin(client, "restart", agent=(1, 5)) == "restarting"
        waiting = {f"1:{nid}" for nid in range(1, SIZE + 1)}
        deadline = time.monotonic() + TIMEOUT
        while waiting:  # the fresh program (exec: the same pid) registers each member again
            assert time.monotonic() < deadline, f"{sorted(waiting)} did not register again"
            message = events.get_message(timeout=1)
            if message is not None and json.loads(message["data"]).get("event") == "agent_registered":
                waiting.discard(json.loads(message["data"])["agent"])
    assert process.is_running()
    assert all(builtin(client, "ping", agent=(1, nid)) == "pong" for nid in range(1, SIZE + 1))

    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == 0
    swarm_grid.agents.pop("1:1")
    assert builtin(client, "ping", agent=(2, 1)) == "pong", "the other agent goes on"


def test_a_swarm_refuses_a_bad_size_and_acl_grids(make_grid, tmp_path):
    config = tmp_path / "agent2.toml"
    config.write_text('[main]\ngid = 1\nnid = 1\n[controllers.main]\nurl = "redis://127.0.0.1:1"\n')
    refused = subprocess.run([sys.executable, "-m", "agent", "-c", str(config), "--swarm", "0"],
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert refused.returncode == 2 and "--swarm: 0 is not a positive number" in refused.stderr
    with pytest.raises(GridError, match="cannot run with acl"):
        make_grid([SWARM], acl=True)
