"""Both daemons speak systemd's notify protocol (Type=notify), checked against a fake NOTIFY_SOCKET."""

import json
import signal

import pytest
from support import FakeSystemd, run, start_agent, start_controller, wait_until

from acgrid.launcher import AgentSpec
from protocol import keys
from protocol.keys import AgentKeys

#: WATCHDOG_USEC as systemd sets it for WatchdogSec=0.4s: a ping every 0.2 s is due.
WATCHDOG_USEC = 400_000


@pytest.fixture
def systemd():
    fake = FakeSystemd(WATCHDOG_USEC)
    yield fake
    fake.close()


def test_controller_is_ready_once_it_routes_pings_the_watchdog_and_says_when_it_stops(make_grid, systemd):
    grid = make_grid([AgentSpec(1, 1)])
    process, _ = start_controller(grid, {}, systemd.env())
    ready = systemd.expect("READY=1", process)
    assert "routing commands from cmds_queue" in ready["STATUS"]
    lanes = [key for key in grid.redis.scan_iter(match=f"{keys.controller_alive('')}*-{process.pid}-*")]
    assert lanes, "ready means it beats and routes"
    for _ in range(3):
        systemd.expect("WATCHDOG=1", process)

    grid.stop_controller(0)  # the grid's own controller: only ours is left to route
    assert run(grid.redis, "ping", gid=1, nid=1)["state"] == "SUCCESS"

    process.send_signal(signal.SIGHUP)
    assert systemd.expect("RELOADING=1", process)["STATUS"] == "reloading"
    assert systemd.expect("READY=1", process) == ready

    process.send_signal(signal.SIGTERM)
    systemd.expect("STOPPING=1", process)
    assert process.wait(30) == 0


def test_agent_is_ready_once_registered_and_taking_commands(make_grid, systemd):
    grid = make_grid([AgentSpec(1, 1)])
    process = start_agent(grid, AgentSpec(1, 2), systemd.env())
    ready = systemd.expect("READY=1", process)
    assert ready["STATUS"] == "agent 1:2 taking commands from main"
    agent = AgentKeys(1, 2)
    assert grid.redis.exists(agent.alive)
    registered = grid.redis.hexists(keys.AGENTS, "1:2") or \
        any(b'"kind":"register"' in envelope for envelope in grid.redis.lrange(agent.outbox, 0, -1))
    assert registered, "ready means the registration is on the bus"
    for _ in range(3):
        systemd.expect("WATCHDOG=1", process)

    wait_until(lambda: grid.redis.hexists(keys.AGENTS, "1:2"), what="the registration drained")
    assert run(grid.redis, "ping", gid=1, nid=2)["state"] == "SUCCESS"
    environment = run(grid.redis, "execute", gid=1, nid=2, args={"name": "env"})["streams"][0]
    assert "AGENT_NID=2" in environment and "NOTIFY_SOCKET" not in environment and "WATCHDOG" not in environment, \
        "a job cannot speak for the agent"

    restart = run(grid.redis, "restart", gid=1, nid=2)  # exec: same pid, same NOTIFY_SOCKET
    assert restart["state"] == "SUCCESS" and json.loads(restart["data"]) == "restarting"
    assert systemd.expect("RELOADING=1", process)["STATUS"] == "restarting", "not STOPPING: the unit stays up"
    assert not [message for message in systemd.seen if "STOPPING" in message]
    assert systemd.expect("READY=1", process) == ready
    assert process.poll() is None

    process.send_signal(signal.SIGTERM)
    assert systemd.expect("STOPPING=1", process)["STATUS"] == "stopping"
    assert process.wait(30) == 0
