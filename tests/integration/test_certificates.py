"""Certificates for a fleet: ``ac-controller certs`` (the cryptography library, no trustme) and the openssl recipe of
docs/certificates.md each make a set that a TLS-only Redis asking for client certificates serves: a controller,
an agent with its own node certificate and a client work over it, and what should be refused is."""

import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from cryptography import x509
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import TIMEOUT

import acclient
from acgrid.launcher import AgentSpec, Grid
from acgrid.redis_server import RedisServer
from acgrid.tls import TlsFiles

DOC = Path(__file__).resolve().parents[2] / "docs" / "certificates.md"


def certs(*argv: object, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "controller", "certs", *map(str, argv)], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, f"certs {argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def without_trustme(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import trustme`` fails: the command must not need it."""
    blocker = tmp_path / "no-trustme"
    blocker.mkdir(exist_ok=True)
    (blocker / "trustme.py").write_text("raise ImportError('trustme is not installed here')\n")
    return {**os.environ, "PYTHONPATH": f"{blocker}:{Path(__file__).resolve().parents[2]}"}


def files_of(pki: Path, client: str) -> TlsFiles:
    return TlsFiles(pki / "server" / "ca.pem", pki / "server" / "server.pem", pki / "server" / "server.key",
                    pki / client / "client.pem", pki / client / "client.key")


def tls_client(port: int, pki: Path, client: str | None, ca: Path | None = None, **options) -> redis.Redis:
    """A redis-py client over TLS that checks the bus's certificate and name (127.0.0.1)."""
    certificate = {"ssl_certfile": str(pki / client / "client.pem"), "ssl_keyfile": str(pki / client / "client.key")} \
        if client else {}
    return redis.Redis(port=port, ssl=True, ssl_ca_certs=str(ca or pki / "ca.pem"), ssl_check_hostname=True,
                       socket_timeout=5, retry=Retry(NoBackoff(), 0), **certificate, **options)


def peer_serial(port: int, pki: Path, client: str) -> int:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(pki / client / "client.pem", pki / client / "client.key")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped:
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A fleet's certificates made by ac-controller certs, in an environment without trustme."""
    folder = tmp_path_factory.mktemp("pki")
    env = without_trustme(folder)
    (folder / "inventory.csv").write_text("gid,nid,hostname,roles\n1,1,web-1.example.net,web\n")
    certs("ca", folder / "pki", env=env)
    certs("server", folder / "pki", "localhost", "127.0.0.1", env=env)
    certs("client", folder / "pki", "controller", "alice", "--inventory", folder / "inventory.csv", env=env)
    certs("ca", folder / "other", "--name", "someone else's CA", env=env)
    certs("client", folder / "other", "mallory", env=env)
    return folder


def test_the_set_serves_a_tls_only_bus_that_requires_client_certificates(pki):
    ours = pki / "pki"
    node = ours / "web-1.example.net"
    with RedisServer(tls=files_of(ours, "controller")) as server:
        grid = Grid([AgentSpec(1, 1, ("web",), {"controllers": {"main": {"security": {
            "client_certificate": str(node / "client.pem"), "client_certificate_key": str(node / "client.key")}}}})],
            bus_url=server.url)
        grid.tls_files = files_of(ours, "controller")  # the controller's certificate for the grid's own parts
        with grid:
            person = acclient.Client.from_url(server.url, ca_file=str(ours / "alice" / "ca.pem"),
                                              cert_file=str(ours / "alice" / "client.pem"),
                                              key_file=str(ours / "alice" / "client.key"))
            job = person.execute(1, 1, "bash", ["-c", "echo 20::over our own tls"]).get_next_result(TIMEOUT)
            assert (job.state, job.data) == ("SUCCESS", "over our own tls")
            assert tls_client(server.port, ours, "alice").ping()

            plain = redis.Redis(port=server.port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
            with pytest.raises(redis.ConnectionError):
                plain.ping()
            with pytest.raises(redis.ConnectionError):
                tls_client(server.port, ours, None).ping()  # no client certificate
            with pytest.raises(redis.ConnectionError):
                tls_client(server.port, pki / "other", "mallory", ca=ours / "ca.pem").ping()  # not signed by ours
            with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
                tls_client(server.port, ours, "alice", ca=pki / "other" / "ca.pem").ping()  # a bus we cannot trust
            context = ssl.create_default_context(cafile=str(ours / "ca.pem"))
            context.load_cert_chain(ours / "alice" / "client.pem", ours / "alice" / "client.key")
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
                    pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|doesn't match"):
                context.wrap_socket(raw, server_hostname="bus.example.net")  # not a name of the bus

            before = peer_serial(server.port, ours, "alice")
            kept = tls_client(server.port, ours, "alice")
            assert kept.ping()
            certs("server", ours, "localhost", "127.0.0.1", "--force")  # rotation: a new certificate, same names
            grid.redis.config_set("tls-cert-file", str(ours / "server" / "server.pem"))
            after = peer_serial(server.port, ours, "alice")
            assert after != before, "CONFIG SET tls-cert-file makes Redis serve the new certificate"
            assert kept.ping(), "connections open before the rotation go on"
            job = person.execute(1, 1, "echo", ["rotated"]).get_next_result(TIMEOUT)
            assert job.state == "SUCCESS"


def test_certs_list_says_what_each_is_for_and_refuses_to_overwrite(pki):
    listed = certs("list", pki / "pki")
    lines = listed.splitlines()
    assert lines[0].startswith("ca.pem  CA  O=agentcontroller,CN=agentcontroller CA")
    assert any(line.startswith("server/server.pem  server+client  CN=localhost  names: localhost, 127.0.0.1")
               for line in lines)
    assert any(line.startswith("web-1.example.net/client.pem  client  CN=web-1.example.net") for line in lines)
    assert "NOT SIGNED" not in listed
    again = subprocess.run([sys.executable, "-m", "controller", "certs", "client", str(pki / "pki"), "alice"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "alice/client.pem exists: --force replaces it" in again.stderr
    for key in (pki / "pki" / "ca.key", pki / "pki" / "alice" / "client.key", pki / "pki" / "server" / "server.key"):
        assert key.stat().st_mode & 0o777 == 0o600


def recipe(section: str = "## By hand, with openssl") -> list[str]:
    """The shell blocks of that section of docs/certificates.md, but the first (the names, set by the test)."""
    text = DOC.read_text()
    part = text[text.index(section):]
    part = part[:part.index("\n## ", 1)]
    blocks = re.findall(r"```sh\n(.*?)```", part, re.DOTALL)
    assert blocks[0].startswith("BUS_NAME="), "the first block sets the names"
    return blocks[1:]


def test_the_openssl_recipe_of_the_docs_makes_a_set_a_tls_bus_serves(tmp_path):
    names = 'BUS_NAME=localhost BUS_IP=127.0.0.1 CLIENTS="controller web-1.example.net" DAYS=30\n'
    script = "set -eu\n" + names + "\n".join(recipe())
    done = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "server/server.pem: OK" in done.stdout and "web-1.example.net/client.pem: OK" in done.stdout
    with RedisServer(tls=files_of(tmp_path, "controller")) as server:
        assert tls_client(server.port, tmp_path, "web-1.example.net").ping()
        with pytest.raises(redis.ConnectionError):
            tls_client(server.port, tmp_path, None).ping()
    listed = certs("list", tmp_path)
    assert "NOT SIGNED" not in listed and "server+client  CN=localhost  names: localhost, 127.0.0.1" in listed
