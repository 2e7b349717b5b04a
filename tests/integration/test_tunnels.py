"""Tunnels between nodes over the controller, with real processes on loopback.

Agent 1:1 opens the tunnels; 2:1 is the usual gateway; 3:1 and 4:1 are gateways that get killed.
Every byte is checked (sha256 of what was sent against what came back).
"""

import hashlib
import os
import queue
import socket
import threading
import time

import psutil
import pytest
from support import wait_until

from acclient import JobError
from acgrid.echo import DigestServer, EchoServer, echo_through, send_through
from acgrid.launcher import AgentSpec, Grid

#: 4:1 beats every 5 s: killed and started again at once, it is back before its heartbeat lapses.
AGENTS = [AgentSpec(1, 1), AgentSpec(2, 1), AgentSpec(3, 1),
          AgentSpec(4, 1, config={"main": {"heartbeat_interval": 5}})]
MB = 1_000_000


@pytest.fixture(scope="module")
def tunnel_grid():
    with Grid(AGENTS) as grid:
        yield grid


@pytest.fixture(scope="module")
def echo():
    with EchoServer() as server:
        yield server


@pytest.fixture
def tunnel(tunnel_grid, echo):
    """A tunnel 1:1 -> 2.1 -> the echo server, closed after the test."""
    client = tunnel_grid.client()
    opened = client.tunnel_open(1, 1, 0, "2.1", "127.0.0.1", echo.port)
    yield opened
    client.tunnel_close(1, 1, **opened)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tunnel_keys(grid: Grid) -> list[str]:
    """Every tunnel key on the bus but the set of controllers that own connections."""
    found = grid.redis.keys("ac:agent:*:tunnel*") + grid.redis.keys("ac:ctl:tunnel:*") + \
        grid.redis.keys("ac:ctl:tunnels:*")
    return sorted(key.decode() for key in found)


def test_100_mb_each_way_arrive_intact(tunnel_grid, tunnel):
    client = tunnel_grid.client()
    assert tunnel["local"] > 0 and tunnel["gateway"] == "2.1"
    transfer = echo_through(tunnel["local"], 100 * MB)
    assert transfer.intact, transfer
    assert wait_until(lambda: client.tunnel_list(1, 1)[0]["connections"] == 0, what="the connection to end")
    listed = client.tunnel_list(1, 1)
    assert listed == [{**tunnel, "connections": 0, "opened": 1, "failed": 0, "last_error": None}]
    assert wait_until(lambda: not tunnel_keys(tunnel_grid), what="every key to go"), tunnel_keys(tunnel_grid)


def test_fixed_local_port_and_50_concurrent_connections(tunnel_grid, echo):
    client = tunnel_grid.client()
    port = free_port()
    opened = client.tunnel_open(1, 1, port, "2.1", "127.0.0.1", echo.port)
    assert opened == {"local": port, "gateway": "2.1", "ip": "127.0.0.1", "remote": echo.port}
    results = [None] * 50

    def one(index: int) -> None:
        results[index] = echo_through(port, 1 * MB + index)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(result is not None and result.intact for result in results), results
    listed = client.tunnel_list(1, 1)
    assert [(item["local"], item["opened"], item["failed"]) for item in listed] == [(port, 50, 0)]
    client.tunnel_close(1, 1, **opened)


def test_half_close_in_both_directions(tunnel_grid, greeter):
    """The client shuts down writing and still reads the server's answer; then the server shuts down
    writing first and still reads what the client sends."""
    client = tunnel_grid.client()
    greeter_port, heard = greeter
    with DigestServer() as digest:
        to_digest = client.tunnel_open(1, 1, 0, "2.1", "127.0.0.1", digest.port)
        transfer = send_through(to_digest["local"], 3 * MB)  # shuts down writing, then reads the digest
        assert transfer.intact, transfer

    to_greeter = client.tunnel_open(1, 1, 0, "2.1", "127.0.0.1", greeter_port)
    request = os.urandom(3 * MB)
    with socket.create_connection(("127.0.0.1", to_greeter["local"]), timeout=30) as sock:
        assert _read_all(sock) == b"hello, then silence"  # the server shut down writing
        sock.sendall(request)  # ... and still reads
        sock.shutdown(socket.SHUT_WR)
        assert heard.get(timeout=30) == hashlib.sha256(request).hexdigest()
    for opened in (to_digest, to_greeter):
        client.tunnel_close(1, 1, **opened)


def test_controller_as_gateway(tunnel_grid, echo):
    client = tunnel_grid.client()
    opened = client.tunnel_open(1, 1, 0, "controller", "127.0.0.1", echo.port)
    transfer = echo_through(opened["local"], 20 * MB)
    assert transfer.intact, transfer
    client.tunnel_close(1, 1, **opened)
    assert wait_until(lambda: not tunnel_keys(tunnel_grid), what="every key to go"), tunnel_keys(tunnel_grid)


@pytest.mark.parametrize(("gateway", "message"), [
    ("1.1", "tunnel to self is refused"),
    ("9.9", "unknown gateway 9.9"),
    ("nine", 'data.gateway: expected "<gid>.<nid>" or "controller"'),
])
def test_refused_gateways(tunnel_grid, echo, gateway, message):
    with pytest.raises(JobError) as refused:
        tunnel_grid.client().tunnel_open(1, 1, 0, gateway, "127.0.0.1", echo.port)
    assert message in refused.value.job.data
    assert tunnel_grid.client().tunnel_list(1, 1) == []


def test_bad_ports_are_refused(tunnel_grid, echo, tunnel):
    client = tunnel_grid.client()
    with pytest.raises(JobError) as taken:
        client.tunnel_open(1, 1, tunnel["local"], "2.1", "127.0.0.1", echo.port)
    assert f"cannot listen on 127.0.0.1:{tunnel['local']}" in taken.value.job.data
    with pytest.raises(JobError) as bad:
        client.tunnel_open(1, 1, 0, "2.1", "127.0.0.1", 70000)
    assert "data.remote: expected a port number 1-65535" in bad.value.job.data


def test_a_gateway_that_cannot_connect_resets_the_connection(tunnel_grid):
    client = tunnel_grid.client()
    opened = client.tunnel_open(1, 1, 0, "2.1", "127.0.0.1", free_port())  # nobody listens there
    with socket.create_connection(("127.0.0.1", opened["local"]), timeout=30) as sock:
        _read_until_closed(sock)
    listed = wait_until(lambda: [item for item in client.tunnel_list(1, 1) if item["failed"]])
    assert "cannot connect to 127.0.0.1" in listed[0]["last_error"]
    assert "Connection refused" in listed[0]["last_error"]
    assert wait_until(lambda: not tunnel_keys(tunnel_grid), what="every key to go"), tunnel_keys(tunnel_grid)
    client.tunnel_close(1, 1, **opened)


def test_close_stops_new_connections_only(tunnel_grid, echo):
    client = tunnel_grid.client()
    opened = client.tunnel_open(1, 1, 0, "2.1", "127.0.0.1", echo.port)
    assert [item["local"] for item in client.tunnel_list(1, 1)] == [opened["local"]]
    with socket.create_connection(("127.0.0.1", opened["local"]), timeout=30) as before:
        before.sendall(b"ping")
        assert before.recv(4) == b"ping"
        assert client.tunnel_close(1, 1, **opened) is True
        assert client.tunnel_list(1, 1) == []
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", opened["local"]), timeout=30)
        before.sendall(b"still here")  # the connection opened before goes on
        assert before.recv(10) == b"still here"
    assert client.tunnel_close(1, 1, **opened) is True  # not open any more: not an error
    assert client.tunnel_close(1, 1, 1, "2.1", "127.0.0.1", 1) is True


def test_gateway_killed_mid_transfer(tunnel_grid, echo):
    client = tunnel_grid.client()
    opened = client.tunnel_open(1, 1, 0, "3.1", "127.0.0.1", echo.port)
    flowing = threading.Event()
    ended = []

    def stream_until_broken(sock: socket.socket) -> None:
        block = os.urandom(1 << 16)

        def write() -> None:
            try:
                while True:
                    sock.sendall(block)
            except OSError:
                pass

        threading.Thread(target=write, daemon=True).start()
        received = 0
        try:
            while data := sock.recv(1 << 20):
                received += len(data)
                if received > 5 * MB:
                    flowing.set()
            ended.append("closed")
        except OSError as exc:
            ended.append(type(exc).__name__)

    with socket.create_connection(("127.0.0.1", opened["local"]), timeout=60) as sock:
        reader = threading.Thread(target=stream_until_broken, args=(sock,))
        reader.start()
        assert flowing.wait(30), "no data flowed through the tunnel"
        tunnel_grid.stop_agent("3:1", kill=True)
        killed_at = time.monotonic()
        reader.join(30)
        assert ended, "the local connection stayed open after its gateway was killed"
        closed_after = time.monotonic() - killed_at
    assert closed_after < 15, closed_after  # the gateway's heartbeat lives 1.5 s
    # the agent closes the local socket first, then lets go of the stream's keys and counts the failure
    assert wait_until(lambda: client.tunnel_list(1, 1)[0]["failed"] == 1, what="the failure to be counted")
    listed = client.tunnel_list(1, 1)[0]
    assert (listed["connections"], listed["failed"]) == (0, 1)
    assert listed["last_error"] == "gateway agent 3:1 lost"
    assert wait_until(lambda: not tunnel_keys(tunnel_grid), what="every key to go"), tunnel_keys(tunnel_grid)
    agent = psutil.Process(tunnel_grid.agents["1:1"].pid)
    assert [conn for conn in agent.net_connections("tcp") if opened["local"] in (conn.laddr.port,
            conn.raddr.port if conn.raddr else None) and conn.status != psutil.CONN_LISTEN] == []

    with socket.create_connection(("127.0.0.1", opened["local"]), timeout=30) as sock:
        _read_until_closed(sock)  # while the gateway is away, connections are reset at once
    assert wait_until(lambda: client.tunnel_list(1, 1)[0]["failed"] == 2)
    assert client.tunnel_list(1, 1)[0]["last_error"] == "gateway agent 3:1 is not alive"

    tunnel_grid.start_agent("3:1")
    transfer = echo_through(opened["local"], 5 * MB)
    assert transfer.intact, transfer
    client.tunnel_close(1, 1, **opened)


def test_a_gateway_back_before_its_heartbeat_lapsed_resets_what_it_held(tunnel_grid, echo):
    client = tunnel_grid.client()
    opened = client.tunnel_open(1, 1, 0, "4.1", "127.0.0.1", echo.port)
    with socket.create_connection(("127.0.0.1", opened["local"]), timeout=30) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        tunnel_grid.stop_agent("4:1", kill=True)
        tunnel_grid.start_agent("4:1")
        _read_until_closed(sock)
    listed = client.tunnel_list(1, 1)[0]
    assert (listed["failed"], listed["last_error"]) == (1, "gateway agent 4:1: the agent restarted")
    assert wait_until(lambda: not tunnel_keys(tunnel_grid), what="every key to go"), tunnel_keys(tunnel_grid)
    assert echo_through(opened["local"], 1 * MB).intact
    client.tunnel_close(1, 1, **opened)


def test_a_gateway_stopped_cleanly_resets_what_it_held(tunnel_grid, echo):
    client = tunnel_grid.client()
    opened = client.tunnel_open(1, 1, 0, "4.1", "127.0.0.1", echo.port)
    with socket.create_connection(("127.0.0.1", opened["local"]), timeout=30) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        tunnel_grid.stop_agent("4:1")  # SIGTERM; its heartbeat would live 15 s more
        _read_until_closed(sock)
    listed = client.tunnel_list(1, 1)[0]
    assert (listed["failed"], listed["last_error"]) == (1, "gateway agent 4:1: the agent stopped")
    assert wait_until(lambda: not tunnel_keys(tunnel_grid), what="every key to go"), tunnel_keys(tunnel_grid)
    tunnel_grid.start_agent("4:1")
    client.tunnel_close(1, 1, **opened)


@pytest.fixture(scope="module")
def greeter():
    """A server that greets, shuts down writing, then reads to the end and reports the sha256 of what it read."""
    heard: queue.Queue = queue.Queue()
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello, then silence")
                conn.shutdown(socket.SHUT_WR)
                heard.put(hashlib.sha256(_read_all(conn)).hexdigest())

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], heard
    server.close()


def _read_all(sock: socket.socket) -> bytes:
    parts = []
    while data := sock.recv(1 << 20):
        parts.append(data)
    return b"".join(parts)


def _read_until_closed(sock: socket.socket) -> str | None:
    """How the connection ended: "eof" or the error's name."""
    try:
        _read_all(sock)
    except TimeoutError:
        raise AssertionError("the connection stayed open") from None
    except OSError as exc:
        return type(exc).__name__
    return "eof"


def test_tunnels_work_with_an_acl_user_per_agent(make_grid, echo):
    """Each agent keeps to its own keys and channels: the controller relays between them."""
    grid = make_grid([AgentSpec(1, 1), AgentSpec(2, 1)], acl=True)

    def connections(user: str) -> int:
        return [client.get("user") for client in grid.redis.client_list()].count(user)

    # commands and intake, each as the agent's own user; no tunnel yet, so no connection for tunnel bells
    assert wait_until(lambda: connections("agent-1-1") == connections("agent-2-1") == 2)
    client = grid.client()
    for gateway in ("2.1", "controller"):
        opened = client.tunnel_open(1, 1, 0, gateway, "127.0.0.1", echo.port)
        transfer = echo_through(opened["local"], 10 * MB)
        assert transfer.intact, (gateway, transfer)
    assert connections("agent-1-1") == 3, "listening to its tunnel bells while it has a tunnel"
    for name in ("agent-1-1", "agent-2-1"):
        assert "NOPERM" not in grid.log_path(name).read_text()


def test_a_peer_takes_over_when_the_relaying_controller_dies(make_grid, echo):
    """Two controllers: the one relaying a connection is killed mid-transfer; its peer adopts the
    connection and every byte still arrives."""
    fast = {"agents": {"sweep_interval": 0.2}, "routing": {"takeover_after": 1.0}}
    grid = make_grid([AgentSpec(1, 1), AgentSpec(2, 1)], controllers=2, controller_config=fast)
    client = grid.client()
    opened = client.tunnel_open(1, 1, 0, "2.1", "127.0.0.1", echo.port)
    sent, received = hashlib.sha256(), hashlib.sha256()
    counted = [0]

    def kill_the_owner() -> None:
        record = wait_until(lambda: grid.redis.keys("ac:ctl:tunnel:*"))[0]
        pid = int(grid.redis.hget(record, "owner").decode().rsplit("-", 2)[1])  # "<host>-<pid>-<uuid>"
        grid.stop_controller(next(i for i, p in enumerate(grid.controllers) if p and p.pid == pid), kill=True)

    with socket.create_connection(("127.0.0.1", opened["local"]), timeout=60) as sock:

        def read() -> None:
            while data := sock.recv(1 << 20):
                received.update(data)
                counted[0] += len(data)

        reader = threading.Thread(target=read)
        reader.start()
        for index in range(40):
            if index == 20:
                kill_the_owner()
            block = os.urandom(1 << 20)
            sock.sendall(block)
            sent.update(block)
        sock.shutdown(socket.SHUT_WR)
        reader.join(60)
    assert counted[0] == 40 << 20 and received.digest() == sent.digest()
    survivor = next(i for i, p in enumerate(grid.controllers) if p is not None)
    assert "tunnel connections" in grid.log_path(f"controller-{survivor}").read_text()
    assert client.tunnel_list(1, 1)[0]["failed"] == 0


def test_the_bus_restarting_empty_resets_open_connections_and_the_tunnel_goes_on(make_grid, echo):
    grid = make_grid([AgentSpec(1, 1), AgentSpec(2, 1)])
    opened = grid.client().tunnel_open(1, 1, 0, "2.1", "127.0.0.1", echo.port)
    with socket.create_connection(("127.0.0.1", opened["local"]), timeout=30) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        grid.redis_server.stop()
        grid.redis_server.restart(empty=True)
        _read_until_closed(sock)  # its lease went with the data

    def works() -> bool:
        try:
            return echo_through(opened["local"], 1 * MB, timeout=10).intact
        except OSError:
            return False

    assert wait_until(works, what="a connection through the tunnel to work again")
    assert all(process.poll() is None for process in [*grid.agents.values(), *grid.controllers])
    assert grid.client().tunnel_list(1, 1)[0]["failed"] >= 1


def test_a_stopping_controller_resets_the_connections_it_made_itself(make_grid, echo):
    grid = make_grid([AgentSpec(1, 1)])
    client = grid.client()
    opened = client.tunnel_open(1, 1, 0, "controller", "127.0.0.1", echo.port)
    with socket.create_connection(("127.0.0.1", opened["local"]), timeout=30) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        grid.stop_controller(0)  # the leases it gave would live 15 s more
        _read_until_closed(sock)
    grid.start_controller(0)
    listed = client.tunnel_list(1, 1)[0]
    assert (listed["failed"], listed["last_error"]) == (1, "the controller stopped")
