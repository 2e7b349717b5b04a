"""``client.cmd`` keeps one pooled connection between sends (``acclient.sender``): a program sending one
command at a time uses the same connection throughout, threads sending at once do not wait for each other,
and a kept connection the bus closed is replaced without the caller noticing."""

import threading

from support import TIMEOUT


def pings(client, count: int) -> list[str]:
    cmds = [client.cmd(1, 1, "ping", None) for _ in range(count)]
    return [cmd.get_next_result(TIMEOUT).state for cmd in cmds]


def test_one_command_at_a_time_sends_on_one_kept_connection(grid):
    client = grid.client()
    assert pings(client, 1) == ["SUCCESS"]
    kept = client._sender._kept
    assert pings(client, 100) == ["SUCCESS"] * 100
    assert client._sender._kept is kept, "the same connection for every send"
    pool = client._redis.connection_pool
    opened = len(pool._available_connections) + len(pool._in_use_connections)
    assert opened <= 2, f"{opened} connections for one thread: the kept one and the one results are read on"


def test_threads_sending_at_once_each_get_their_answers(grid):
    client = grid.client()
    start = threading.Barrier(4)
    states: list[str] = []

    def send() -> None:
        start.wait(TIMEOUT)
        states.extend(pings(client, 50))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert states == ["SUCCESS"] * 200


def test_a_kept_connection_the_bus_closed_is_replaced(grid):
    client = grid.client()
    assert pings(client, 1) == ["SUCCESS"]
    host, port = client._sender._kept._sock.getsockname()[:2]
    assert grid.redis.client_kill(f"{host}:{port}")
    assert pings(client, 3) == ["SUCCESS"] * 3, "the send after the cut went through"
    assert client._sender._kept is None or client._sender._kept._sock.getsockname()[1] != port
