"""One scenario entirely over TLS and least privilege: a TLS-only redis-server that asks for client
certificates, its default user off, the controller on an admin user, each agent on its own user and the
client on a client user."""

import json

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from acclient import cli
from acgrid.launcher import AgentSpec


@pytest.fixture(scope="module")
def tls_grid():
    from acgrid.launcher import Grid

    with Grid([AgentSpec(1, 1, ("web",)), AgentSpec(1, 2, ("web",))], tls=True, acl=True) as grid:
        yield grid


def test_commands_flow_over_tls(tls_grid):
    assert tls_grid.bus_url.startswith("rediss://")
    client = tls_grid.client()
    job = client.execute(1, 1, "bash", ["-c", "echo 20::: && echo over tls && echo :::"]).get_next_result(30)
    assert (job.state, job.data) == ("SUCCESS", "over tls")
    cmd = client.cmd(None, None, "ping", None, role="web", fanout=True)
    assert sorted((job.gid, job.nid) for job in cmd.iter_results(timeout=30)) == [(1, 1), (1, 2)]
    users = {connection["user"] for connection in tls_grid.redis.client_list()}
    assert {"controller", "agent-1-1", "agent-1-2", "client-grid"} <= users and "default" not in users


def test_cli_over_tls(tls_grid, capsys):
    files = tls_grid.tls_files
    user, password = tls_grid.client_user()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--bus", tls_grid.bus_url, "--ca-file", str(files.ca), "--cert-file", str(files.client_cert),
                  "--key-file", str(files.client_key), "--username", user, f"--password={password}",
                  "--json", "agents"])
    assert exit_.value.code == 0
    assert {(agent["gid"], agent["nid"]) for agent in json.loads(capsys.readouterr().out)} == {(1, 1), (1, 2)}


def test_plain_and_certificate_less_connections_are_refused(tls_grid):
    once = {"port": tls_grid.address.port, "socket_timeout": 1, "retry": Retry(NoBackoff(), 0)}
    with pytest.raises(redis.ConnectionError):
        redis.Redis(**once).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(**once, ssl=True, ssl_ca_certs=str(tls_grid.tls_files.ca)).ping()
    files = tls_grid.tls_files
    certified = {**once, "ssl": True, "ssl_ca_certs": str(files.ca), "ssl_certfile": str(files.client_cert),
                 "ssl_keyfile": str(files.client_key)}
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**certified).ping()  # a certificate alone is not enough: the default user is off
