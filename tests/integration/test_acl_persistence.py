"""``ac-controller acl`` against a real Redis with an aclfile: what it changes survives a Redis restart (agents
and clients carry on with their users), it refuses a bus without an aclfile, it lists every user it made and
revokes clients, and it makes a fleet's users and ready agent2.toml files from an inventory."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import tomli_w
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import TIMEOUT, wait_until

import acclient
from acgrid.launcher import AgentSpec, Grid
from acgrid.redis_server import RedisServer
from agent.config import load_config as load_agent_config
from protocol import keys
from protocol.job import now_ms
from protocol.presence import Heartbeat

INVENTORY = "gid,nid,hostname,roles\n2,1,web-1.example.net,web\n2,2,db-2.example.net,db;backup\n"
#: What the test's nodes change in the default node config: fast heartbeats, files beside their config.
TEMPLATE = {"main": {"heartbeat_interval": 0.3},
            "logging": {"db": {"type": "DB", "log_dir": "logs"}, "console": {"type": "console", "levels": "7-9"}}}


def ac_controller(url: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller", "--bus", url, "acl", *argv],
                          capture_output=True, text=True, timeout=60)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def once(url: str, **credentials: str) -> redis.Redis:
    """A client of the bus that tries once (a refused password is not retried)."""
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_timeout=5, **credentials)


def users(url: str) -> dict[str, dict]:
    return {row["user"]: row for row in json.loads(ok(ac_controller(url, "list", "--all", "--json")))}


@pytest.fixture
def acl_bus(tmp_path):
    """A Redis that keeps its users in an aclfile (which must exist, empty, before it starts)."""
    aclfile = tmp_path / "users.acl"
    aclfile.touch()
    server = RedisServer(tmp_path / "redis", extra_args=("--aclfile", str(aclfile)))
    server.workdir.mkdir()
    server.start()
    yield server, aclfile
    server.stop()


@pytest.fixture
def fleet(acl_bus, tmp_path):
    """A controller on that bus, the inventory's users and configs made by ``acl add-agents``, both agents started
    from the configs it wrote, and a client user."""
    server, aclfile = acl_bus
    (tmp_path / "inventory.csv").write_text(INVENTORY)
    (tmp_path / "template.toml").write_text(tomli_w.dumps(TEMPLATE))
    made = ok(ac_controller(server.url, "add-agents", str(tmp_path / "inventory.csv"), "--out",
                            str(tmp_path / "fleet"), "--template", str(tmp_path / "template.toml")))
    assert "2:1 web-1.example.net: user agent-2-1, roles granted: web" in made
    assert "2:2 db-2.example.net: user agent-2-2, roles granted: backup, db" in made
    with Grid([AgentSpec(1, 1)], bus_url=server.url, heartbeat_interval=0.3) as grid:
        for name, host in (("2:1", "web-1.example.net"), ("2:2", "db-2.example.net")):
            grid.start_agent_from_config(tmp_path / "fleet" / host / "agent2.toml", name)
        password = ok(ac_controller(server.url, "add-client", "alice")).split("password ", 1)[1].split()[0]
        yield grid, server, aclfile, password


def alice(server: RedisServer, password: str) -> acclient.Client:
    return acclient.Client.from_url(server.url, username="client-alice", password=password)


def test_users_and_revocations_survive_a_redis_restart(fleet, tmp_path):
    _, server, aclfile, password = fleet
    saved = aclfile.read_text()
    assert all(f"user {user} on" in saved for user in ("agent-2-1", "agent-2-2", "client-alice")), saved
    assert alice(server, password).cmd(2, 1, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"
    ok(ac_controller(server.url, "revoke", "2", "2"))  # saved too: it must stay revoked
    forgotten = ok(ac_controller(server.url, "add-client", "scratch", "--in-memory"))
    scratch = forgotten.split("password ", 1)[1].split()[0]
    assert once(server.url, username="client-scratch", password=scratch).ping()

    server.stop()
    stopped = now_ms()
    server.restart()  # from its append-only file and its aclfile

    bus = once(server.url)
    listed = bus.execute_command("ACL", "LIST")
    assert any(b"user agent-2-1 on" in rule for rule in listed) and not any(b"agent-2-2" in rule for rule in listed)
    assert once(server.url, username="client-alice", password=password).ping()
    with pytest.raises(redis.AuthenticationError):
        once(server.url, username="client-scratch", password=scratch).ping()  # made --in-memory: forgotten

    def beats_again() -> bool:  # it reconnected with its own user: the restart did not lock it out
        return (Heartbeat.from_json(bus.get(keys.AgentKeys(2, 1).alive)).time or 0) > stopped

    wait_until(beats_again, what="agent 2:1 beating again after the Redis restart")
    job = alice(server, password).execute(2, 1, "bash", ["-c", "echo 20::after the restart"]).get_next_result(TIMEOUT)
    assert (job.state, job.data) == ("SUCCESS", "after the restart")
    rows = users(server.url)
    assert rows["client-scratch"]["state"] == "missing", "the book remembers it, Redis does not"
    assert rows["agent-2-2"]["state"] == "revoked"
    assert rows["agent-2-1"]["state"] == "on" and rows["agent-2-1"]["seen"] == "connected"


def test_acl_list_shows_every_user_made_and_revoke_client_cuts_one_off(fleet):
    grid, server, _, password = fleet
    listed = ok(ac_controller(server.url, "list"))
    header, *lines = listed.splitlines()
    assert header.split()[:4] == ["WHO", "USER", "ENABLED", "CONNECTIONS"]
    by_user = {line.split()[1]: line.split() for line in lines}
    assert set(by_user) == {"agent-2-1", "agent-2-2", "client-alice"}, "agents and clients; not default"
    assert by_user["agent-2-1"][:3] == ["2:1", "agent-2-1", "yes"] and int(by_user["agent-2-1"][3]) >= 2
    assert by_user["agent-2-2"][4:7] == ["agent", "backup,db", socket.gethostname()], "the host it registered from"
    assert by_user["agent-2-2"][-1] == "now"
    rows = users(server.url)
    assert rows["client-alice"]["kind"] == "client" and rows["client-alice"]["roles"] is None
    assert all(row["created"] and "@" in row["by"] for row in rows.values())

    with grid.redis.pubsub(ignore_subscribe_messages=True) as events:
        events.subscribe(keys.EVENTS)
        grid.stop_agent("2:2")
        wait_until(lambda: (message := events.get_message(timeout=1)) is not None
                   and json.loads(message["data"]) == {"event": "agent_lost", "agent": "2:2"},
                   what="agent 2:2 judged lost")
    stopped = users(server.url)["agent-2-2"]
    assert stopped["connections"] == 0 and stopped["seen"] == "lost" and stopped["last_seen"] > 0

    client = alice(server, password)
    assert client.cmd(2, 1, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"
    watching = once(server.url, username="client-alice", password=password)
    assert watching.ping()
    revoked = ok(ac_controller(server.url, "revoke-client", "alice"))
    assert "revoked client alice" in revoked
    with pytest.raises(redis.ConnectionError):
        watching.ping()  # Redis closed its connection at once
    with pytest.raises(redis.AuthenticationError):
        once(server.url, username="client-alice", password=password).ping()
    again = ac_controller(server.url, "revoke-client", "alice")
    assert again.returncode == 1 and "client alice has no user" in again.stderr
    assert "client-alice" not in ok(ac_controller(server.url, "list"))
    row = users(server.url)["client-alice"]
    assert row["state"] == "revoked" and row["refusals"] >= 1 and row["seen"] == "refused: auth"


def test_the_written_configs_are_ready_node_configs(fleet, tmp_path):
    _, server, _, _ = fleet
    web = tmp_path / "fleet" / "web-1.example.net" / "agent2.toml"
    assert web.stat().st_mode & 0o777 == 0o600 and web.parent.stat().st_mode & 0o777 == 0o700
    config = load_agent_config(web)
    assert (config.gid, config.nid, config.roles, config.heartbeat_interval) == (2, 1, ("web",), 0.3)
    assert config.controllers["main"].username == "agent-2-1"
    assert config.message_id_file == web.parent / "message.id", "paths of the template, beside the config"
    default = tmp_path / "default"
    (tmp_path / "one.toml").write_text('[[nodes]]\ngid = 3\nnid = 1\nhostname = "web-3"\nroles = ["web"]\n')
    ok(ac_controller(server.url, "add-agents", str(tmp_path / "one.toml"), "--out", str(default),
                     "--agent-url", "rediss://bus.example.net:6379/0"))
    node = load_agent_config(default / "web-3" / "agent2.toml")
    assert str(node.history_file) == "/var/lib/ac-agent/history.db", "where the systemd unit lets it write"
    assert {logger.log_dir for logger in node.loggers if logger.type == "DB"} == {"/var/log/ac-agent"}
    bus = node.controllers["main"]
    assert (bus.tls, bus.host, bus.ca_file, bus.cert_file, bus.key_file) == (
        True, "bus.example.net", "/etc/ac/ca.pem", "/etc/ac/client.pem", "/etc/ac/client.key")

    assert users(server.url)["agent-3-1"]["host"] == "web-3", "not registered yet: the inventory's hostname"
    again = ok(ac_controller(server.url, "add-agents", str(tmp_path / "one.toml"), "--out", str(default)))
    assert "skipped, user agent-3-1 exists" in again, "run again: nodes with users are left alone"
    assert load_agent_config(default / "web-3" / "agent2.toml").controllers["main"].password == bus.password
    reset = ok(ac_controller(server.url, "add-agents", str(tmp_path / "one.toml"), "--out", str(default), "--reset"))
    assert "user agent-3-1" in reset
    assert load_agent_config(default / "web-3" / "agent2.toml").controllers["main"].password != bus.password

    (tmp_path / "bad.csv").write_text(INVENTORY + "2,3,web-1.example.net,web\n")
    bad = ac_controller(server.url, "add-agents", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "bad"))
    assert bad.returncode == 1 and "line 4: web-1.example.net is already in" in bad.stderr
    assert not (tmp_path / "bad").exists() and "agent-2-3" not in users(server.url)


def test_changes_are_refused_on_a_bus_without_an_aclfile(tmp_path):
    with RedisServer() as server:
        refused = ac_controller(server.url, "add-agent", "1", "7", "--roles", "web")
        assert refused.returncode == 1 and refused.stdout == ""
        assert "has no aclfile, so users made now would vanish when Redis restarts" in refused.stderr
        assert "aclfile /etc/redis/users.acl" in refused.stderr and "--in-memory" in refused.stderr
        bus = once(server.url)
        assert not any(b"agent-1-7" in rule for rule in bus.execute_command("ACL", "LIST"))
        assert not bus.exists(keys.ACL_USERS, keys.GRANTED_ROLES), "nothing was changed"
        (tmp_path / "inventory.csv").write_text(INVENTORY)
        bulk = ac_controller(server.url, "add-agents", str(tmp_path / "inventory.csv"), "--out", str(tmp_path / "x"))
        assert bulk.returncode == 1 and "has no aclfile" in bulk.stderr and not (tmp_path / "x").exists()
        assert ac_controller(server.url, "revoke-client", "alice").returncode == 1

        anyway = ac_controller(server.url, "add-agent", "1", "7", "--in-memory")
        assert anyway.returncode == 0 and "not saved (--in-memory)" in anyway.stderr
        assert ok(ac_controller(server.url, "list")).splitlines()[1].split()[:3] == ["1:7", "agent-1-7", "yes"]


def test_a_template_that_is_not_toml_is_refused_before_anything_is_made(acl_bus, tmp_path):
    server, _ = acl_bus
    (tmp_path / "inventory.csv").write_text(INVENTORY)
    (tmp_path / "template.toml").write_text("[main\n")
    done = ac_controller(server.url, "add-agents", str(tmp_path / "inventory.csv"), "--out", str(tmp_path / "out"),
                         "--template", str(tmp_path / "template.toml"))
    assert done.returncode == 1 and "not valid TOML" in done.stderr
    assert users(server.url) == {}
    assert Path(tmp_path / "out").exists() is False


def test_a_bus_given_an_aclfile_later_keeps_the_users_it_held(tmp_path):
    """docs/security.md: before restarting a bus to give it an aclfile, ACL LIST into that file keeps its users."""
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    try:
        ok(ac_controller(server.url, "add-agent", "1", "7", "--password", "seven", "--in-memory"))
        aclfile = tmp_path / "users.acl"
        aclfile.write_text("".join(f"{rule.decode()}\n" for rule in once(server.url).execute_command("ACL", "LIST")))
        server.stop()
        server.extra_args = ("--aclfile", str(aclfile))
        server.restart()
        assert once(server.url, username="agent-1-7", password="seven").get(keys.AgentKeys(1, 7).outbox_seq) is None
        assert ok(ac_controller(server.url, "revoke", "1", "7")).startswith("revoked agent 1:7")
        assert "agent-1-7" not in aclfile.read_text(), "saved"
    finally:
        server.stop()
