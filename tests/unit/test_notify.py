"""The sd_notify protocol against a fake NOTIFY_SOCKET."""

import os
import socket

import pytest
import trio

from acdaemon.notify import Notifier


@pytest.fixture
def fake_systemd(tmp_path):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        yield str(path), server


def received(server):
    return server.recv(4096).decode().split("\n")


def test_ready_status_stopping(fake_systemd):
    path, server = fake_systemd
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("serving 3 agents")
    assert received(server) == ["READY=1", "STATUS=serving 3 agents"]
    notifier.status("busy")
    assert received(server) == ["STATUS=busy"]
    notifier.stopping()
    assert received(server) == ["STOPPING=1", "STATUS=stopping"]


def test_watchdog_pings_at_half_the_period(fake_systemd):
    path, server = fake_systemd
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval == pytest.approx(0.1)

    async def three_pings():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifier.keep_watchdog)
            for _ in range(3):
                assert await trio.to_thread.run_sync(received, server) == ["WATCHDOG=1"]
            nursery.cancel_scope.cancel()

    trio.run(three_pings)


def test_watchdog_meant_for_another_process_is_ignored():
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_without_systemd_nothing_happens():
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("x")
    notifier.stopping()


def test_abstract_socket_address(fake_systemd):
    name = f"@ac-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name[1:])
        server.settimeout(5)
        Notifier({"NOTIFY_SOCKET": name}).ready("abstract")
        assert received(server)[0] == "READY=1"
