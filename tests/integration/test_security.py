"""Least privilege on the bus: a Redis ACL user per agent, forged results, hostile input."""

import json
import subprocess
import sys
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import TIMEOUT, says_result_dropped, wait_until

import acclient
from acgrid.launcher import AgentSpec, Grid
from controller import acl
from protocol import envelope, keys, tunnels
from protocol.job import Job
from protocol.presence import Registration
from protocol.states import State

LOGGING = {"db": {"type": "DB", "log_dir": "logs"}, "ac": {"type": "AC", "levels": "3-9", "flush_int": 0.2}}


def acl_agent(gid: int, nid: int, password: str) -> AgentSpec:
    security = {"username": f"agent-{gid}-{nid}", "password": password}
    return AgentSpec(gid, nid, ("web",), {"controllers": {"main": {"security": security}}, "logging": LOGGING})


def as_agent(grid: Grid, gid: int, nid: int, password: str) -> redis.Redis:
    return redis.Redis(port=grid.address.port, username=f"agent-{gid}-{nid}", password=password,
                       retry=Retry(NoBackoff(), 0), socket_timeout=5)


@pytest.fixture(scope="module")
def acl_grid():
    runpy = {"binary": sys.executable, "cwd": "/tmp", "args": ["{domain}/{name}.py"]}
    with Grid([AgentSpec(1, 2, ("web",), {"extensions": {"runpy": runpy}})], heartbeat_interval=0.3) as grid:
        password = acl.add_agent(grid.redis, 1, 1, roles=["web"])
        grid.start_agents([acl_agent(1, 1, password)])
        yield grid, password


def test_an_agent_with_its_own_user_does_all_of_its_work(acl_grid):
    grid, _ = acl_grid
    users = [client.get("user") for client in grid.redis.client_list()]
    assert users.count("agent-1-1") >= 2, "the agent's shared and blocking connections use its user"
    client = grid.client()
    job = client.execute(1, 1, "bash", ["-c", "read x; echo 3::said $x; echo 20::$x"], data="hi")
    job = job.get_next_result(TIMEOUT)
    assert (job.state, job.data) == ("SUCCESS", "hi")
    assert [m["data"] for m in client.get_msgs(1, 1, jobid=job.id, levels="3")] == ["said hi"]
    logged = [json.loads(line)["data"] for line in grid.redis.lrange(keys.agent_logs(1, 1), 0, -1)]
    assert "said hi" in logged, "AC logger messages reach the controller"
    cmd = client.execute(1, 1, "sleep", ["60"], args=acclient.RunArgs(max_time=-1))
    cmd.wait_started(TIMEOUT)
    assert {"cpu", "rss"} <= set(cmd.get_stats())
    cmd.kill()
    assert cmd.get_next_result(TIMEOUT).state == "KILLED"
    fanout = client.cmd(None, None, "ping", None, role="web", fanout=True)
    assert sorted((job.gid, job.nid) for job in fanout.iter_results(timeout=TIMEOUT)) == [(1, 1), (1, 2)]
    assert client.get_os_info(1, 1)["hostname"]


@pytest.mark.parametrize("forbidden", [
    ("LRANGE", "ac:agent:1:2:cmds", 0, -1),
    ("RPUSH", "ac:agent:1:2:cmds", "{}"),
    ("LMOVE", "ac:agent:1:2:cmds", "ac:agent:1:1:cmds", "LEFT", "RIGHT"),
    ("GET", "ac:agent:1:2:outseq"),
    ("RPUSH", "cmds_queue", "{}"),
    ("HSET", "jobresult:x", "1:1", "{}"),
    ("HGETALL", "jobresult:x"),
    ("RPUSH", "cmds_queue_x", "{}"),
    ("LPUSH", "joblog", "{}"),
    ("HSET", "ac:ctl:agents", "1:1", "{}"),
    ("HDEL", "ac:ctl:running:1:1", "x"),
    ("PUBLISH", "ac:ctl:events", "{}"),
    ("PUBLISH", "ac:agent:1:2:bell", ""),
    ("KEYS", "*"),
    ("SCAN", 0),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "*"),
    ("ACL", "LIST"),
    ("ACL", "SETUSER", "agent-1-1", "+@all"),
    ("EVAL", "return 1", 0),
    ("SHUTDOWN",),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("SUBSCRIBE", "ac:agent:1:2:bell"),
    ("PSUBSCRIBE", "ac:agent:*"),
])
def test_an_agent_user_is_refused_everything_else(acl_grid, forbidden):
    grid, password = acl_grid
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_agent(grid, 1, 1, password).execute_command(*forbidden)


def test_an_agent_user_may_use_its_own_keys(acl_grid):
    grid, password = acl_grid
    agent = as_agent(grid, 1, 1, password)
    assert agent.get(keys.AgentKeys(1, 1).outbox_seq) is not None
    assert agent.publish(keys.AgentKeys(1, 1).bell, "") >= 0


def test_a_result_for_a_job_not_sent_to_the_agent_is_dropped_and_logged(acl_grid):
    grid, password = acl_grid
    client = grid.client()
    theirs = client.execute(1, 2, "bash", ["-c", "echo 20::genuine"])
    assert theirs.get_next_result(TIMEOUT).data == "genuine"
    forged = Job(theirs.id, 1, 2, "execute", state=State.SUCCESS, data="forged", level=20)
    agent_keys = keys.AgentKeys(1, 1)
    compromised = as_agent(grid, 1, 1, password)  # what a compromised node 1:1 can do
    with grid.redis.pubsub(ignore_subscribe_messages=True) as events:
        events.subscribe(keys.EVENTS)
        compromised.rpush(agent_keys.outbox, envelope.job_envelope(forged, push=True, final=True),
                          envelope.register_envelope(Registration(1, 1, ("web",))))
        compromised.publish(agent_keys.bell, "")
        deadline = time.monotonic() + TIMEOUT
        while True:  # the registration behind the forgery tells us the controller has drained both
            assert time.monotonic() < deadline, "the controller did not drain the outbox"
            message = events.get_message(timeout=1)
            if message is not None and json.loads(message["data"]).get("agent") == "1:1":
                break
    assert list(client.get_cmd_jobs(theirs.id)) == [(1, 2)]
    assert client.get_cmd_jobs(theirs.id)[(1, 2)].data == "genuine"
    assert grid.redis.llen(keys.result_queue(theirs.id)) == 0
    assert says_result_dropped(grid.log_path("controller-0").read_text(), theirs.id, agent="1:1")


def test_hostile_commands_straight_into_an_agents_queue_are_answered_not_obeyed(acl_grid):
    """Whoever can write an agent's queue still cannot make it escape its script folder or crash."""
    grid, _ = acl_grid
    queue = keys.AgentKeys(1, 2).commands
    client = grid.client()
    cases = {
        "nested": '{"id": "nested", "cmd": "ping", "gid": 1, "nid": 2, "data": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "types": json.dumps({"id": "types", "cmd": "execute", "gid": 1, "nid": 2, "args": {"name": 5}}),
        "huge-id": json.dumps({"id": "x" * 10_000, "cmd": "ping", "gid": 1, "nid": 2}),
        "not-json": "\x00\xff garbage",
    }
    grid.redis.rpush(queue, *cases.values())
    after = client.cmd(1, 2, "ping", None, id="after-the-garbage").get_next_result(TIMEOUT)
    assert after.state == "SUCCESS", "the agent still serves"
    assert client.get_cmd_jobs("types") == {}, "never routed: the agent's answer is not taken"
    # the agent may answer "types" after the ping, and the controller logs a drop after draining it
    assert wait_until(lambda: says_result_dropped(grid.log_path("controller-0").read_text(), "types", agent="1:2"),
                      what="the drop to be logged")
    assert grid.redis.llen(keys.AgentKeys(1, 2).inflight) == 0, "nothing unanswerable stays held"


def test_a_revoked_agent_is_cut_off_at_once(make_grid):
    grid = make_grid([AgentSpec(1, 2)], heartbeat_interval=0.3)
    password = acl.add_agent(grid.redis, 1, 1, roles=["web"])
    grid.start_agents([acl_agent(1, 1, password)])
    assert [user.user for user in acl.list_agents(grid.redis) if user.connections] == ["agent-1-1"]
    running = grid.client().execute(1, 1, "sleep", ["60"])
    running.wait_started(TIMEOUT)
    assert acl.revoke_agent(grid.redis, 1, 1)
    assert all(client.get("user") != "agent-1-1" for client in grid.redis.client_list()), "connections closed"
    assert acl.list_agents(grid.redis) == []
    with pytest.raises(redis.exceptions.AuthenticationError):
        as_agent(grid, 1, 1, password).ping()
    lost = running.get_next_result(TIMEOUT)
    assert (lost.state, lost.data) == ("ERROR", "agent 1:1 lost")
    assert not acl.revoke_agent(grid.redis, 1, 1), "revoking again is a no-op"


def ac_controller(grid: Grid, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller", "--bus", grid.bus_url, "acl", *argv],
                          capture_output=True, text=True, timeout=60)


def test_acl_command_line_prints_a_working_agent_config(make_grid, tmp_path):
    grid = make_grid([AgentSpec(1, 2)], heartbeat_interval=0.3)
    added = ac_controller(grid, "add-agent", "3", "1", "--in-memory")  # the grid's Redis has no aclfile
    assert added.returncode == 0, added.stderr
    snippet = added.stdout.split("# its agent2.toml:\n", 1)[1]
    assert 'username = "agent-3-1"' in snippet and grid.bus_url in snippet
    assert snippet.lstrip().startswith("[main]\ngid = 3\nnid = 1\nroles = []\n")
    (tmp_path / "agent2.toml").write_text(snippet.replace("[main]\n", "[main]\nheartbeat_interval = 0.3\n", 1))
    grid.start_agent_from_config(tmp_path / "agent2.toml", "3:1")
    assert grid.client().cmd(3, 1, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"
    listed = ac_controller(grid, "list")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith("3:1"))
    assert row.split()[1:3] == ["agent-3-1", "yes"] and int(row.split()[3]) >= 2
    assert ac_controller(grid, "revoke", "3", "1", "--in-memory").returncode == 0
    gone = ac_controller(grid, "revoke", "3", "1", "--in-memory")
    assert gone.returncode == 1 and "agent 3:1 has no user" in gone.stderr


def test_a_client_user_can_use_the_client_but_not_the_agents_keys(acl_grid):
    grid, _ = acl_grid
    user, password = acl.add_client(grid.redis, "ops")
    client = acclient.Client("127.0.0.1", grid.address.port, password, username=user)
    cmd = client.execute(1, 2, "bash", ["-c", "echo 4::working; sleep 0.3; echo 20::done"])
    assert cmd.wait_started(TIMEOUT)[(1, 2)].state in ("RUNNING", "SUCCESS")
    assert [job.data for job in cmd.iter_results(timeout=TIMEOUT)] == ["done"]
    assert cmd.id in [command["id"] for command in client.get_cmds(0, 20)]
    assert client.get_cmd_jobs(cmd.id)[(1, 2)].state == "SUCCESS"
    raw = redis.Redis(port=grid.address.port, username=user, password=password, retry=Retry(NoBackoff(), 0))
    for forbidden in [("LRANGE", "ac:agent:1:2:cmds", 0, -1), ("RPUSH", "ac:agent:1:2:cmds", "{}"),
                      ("HSET", "ac:ctl:agents", "9:9", "{}"), ("HSET", "jobresult:x", "1:2", "{}"),
                      ("DEL", "cmds_queue"), ("FLUSHALL",), ("KEYS", "*"), ("PUBLISH", "ac:agent:1:2:bell", "")]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.execute_command(*forbidden)


@pytest.mark.parametrize(("domain", "name"), [
    ("..", "x"), ("a/b", "x"), ("x", "../../etc/passwd"), ("x", "/etc/passwd"), ("x", "a\0b"), ("x", ".."),
    ("x", "a..b"), ("\\..", "x"),
])
def test_script_names_that_could_leave_the_script_folder_are_refused(acl_grid, domain, name):
    grid, _ = acl_grid
    job = grid.client().cmd(1, 2, "runpy", acclient.RunArgs(domain=domain, name=name)).get_next_result(TIMEOUT)
    assert job.state == "ERROR"
    assert "is not allowed here: no '/', '..' or NUL" in job.data


def test_a_compromised_node_reaches_only_where_a_client_opened_a_tunnel(acl_grid):
    """Agent 1:1's credentials can queue any tunnel request; the controller relays only what a client granted."""
    grid, password = acl_grid
    client = grid.client()
    granted = client.tunnel_open(1, 1, 0, "1.2", "127.0.0.1", 9)  # a client lets 1:1 reach 127.0.0.1:9 via 1:2
    agent_keys = keys.AgentKeys(1, 1)
    compromised = as_agent(grid, 1, 1, password)
    stream = tunnels.new_stream_id()
    compromised.rpush(agent_keys.tunnel_requests, tunnels.encode(tunnels.OPEN, stream=stream, gateway="1.2",
                                                                 ip="127.0.0.1", remote=22))
    compromised.publish(agent_keys.tunnel_up, tunnels.bell(tunnels.REQUESTS))
    refused = "refused a connection of agent 1:1: no client opened a tunnel on agent 1:1 to 127.0.0.1:22 through 1.2"
    assert wait_until(lambda: refused in grid.log_path("controller-0").read_text(), what="the refusal")
    assert not grid.redis.exists(keys.tunnel_record(stream)), "nothing was relayed"
    assert grid.redis.hkeys(keys.tunnel_grants(1, 1)) == [b"1.2|127.0.0.1|9"]
    client.tunnel_close(1, 1, **granted)
