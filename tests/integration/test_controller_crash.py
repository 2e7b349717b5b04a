"""Controllers killed at random instants while commands flow: nothing lost, nothing done twice.

Proven with real processes: a real redis-server, real agents, controllers started, SIGKILLed
and replaced while 5 000 commands go through them. Every command must come back with
exactly its expected result: one result per command (none lost, none duplicated), one entry
in ``joblog`` (routed once), and, for the commands that run a process, one line in a trace
file the process appends its job id to (executed once).
"""

import collections
import json
import random
import signal
import threading
import time

import pytest
from support import command, result, submit, wait_until

from acgrid.launcher import AgentSpec
from protocol import keys

FAST = {"agents": {"sweep_interval": 0.1}, "routing": {"takeover_after": 1.0, "batch_size": 64}}
AGENTS = [AgentSpec(1, 1, ("work",)), AgentSpec(1, 2, ("work",))]


def commands_with_trace(count: int, traced_every: int, trace_path) -> list[dict]:
    """Pings, and every ``traced_every``-th command a process that appends its job id to the trace."""
    trace = ["-c", f'echo "$AGENT_JOBID" >> {trace_path}']
    return [command("execute", role="work", args={"name": "sh", "args": trace}) if index % traced_every == 0
            else command(role="work") for index in range(count)]


def assert_each_exactly_once(grid, sent: list[dict], trace_path) -> None:
    bus = grid.redis
    for item in sent:
        job = result(bus, item["id"], timeout=120)
        assert (job["state"], job["id"]) == ("SUCCESS", item["id"]), job
    barrier = command(role="work")  # routed after all of the above: their duplicates would be in by now
    submit(bus, barrier)
    result(bus, barrier["id"])
    pipe = bus.pipeline(transaction=False)
    for item in sent:
        pipe.llen(keys.result_queue(item["id"]))
        pipe.hlen(keys.job_results(item["id"]))
    counts = pipe.execute()
    assert counts[0::2] == [0] * len(sent), "a command got a second result"
    assert counts[1::2] == [1] * len(sent), "a command went to more than one agent"
    logged = collections.Counter(json.loads(raw)["id"] for raw in bus.lrange(keys.JOBLOG, 0, -1))
    assert all(logged[item["id"]] == 1 for item in sent), "a command was routed twice (or never)"
    traced = collections.Counter(trace_path.read_text().split())
    expected = {item["id"] for item in sent if item["cmd"] == "execute"}
    assert set(traced) == expected and set(traced.values()) == {1}, "a process ran twice (or never)"
    assert not bus.exists(keys.DEAD_LETTER_COUNT)
    for gid, nid in ((1, 1), (1, 2)):
        assert bus.hlen(keys.running_jobs(gid, nid)) == 0


def holds_batch(grid, process) -> bool:
    """Whether a controller has claimed commands it has not committed yet."""
    return any(True for _ in grid.redis.scan_iter(match=f"{keys.controller_inflight('')}*-{process.pid}-*"))


def freeze_holding_a_batch(grid, process, chaos) -> bool:
    """SIGSTOP the controller at a random instant when it holds a claimed batch (False if none came)."""
    for _ in range(500):
        process.send_signal(signal.SIGSTOP)
        if holds_batch(grid, process):
            return True
        process.send_signal(signal.SIGCONT)
        time.sleep(chaos.uniform(0, 0.005))
    return False


@pytest.mark.slow
def test_controllers_killed_at_random_instants_lose_and_repeat_nothing(make_grid, tmp_path):
    grid = make_grid(AGENTS, controllers=2, heartbeat_interval=0.5, controller_config=FAST, log_level="WARNING")
    trace = tmp_path / "trace"
    sent = commands_with_trace(5000, 25, trace)
    chaos = random.Random()
    stops: list[str] = []
    flowing = threading.Event()

    plan = ["kill holding a batch", "freeze past takeover", "kill", "stop", "kill holding a batch", "kill", "kill",
            "stop"]

    def kill_and_replace():
        flowing.wait()
        for step in plan:
            time.sleep(chaos.uniform(0.05, 0.3))
            index = chaos.choice([i for i, process in enumerate(grid.controllers) if process is not None])
            process = grid.controllers[index]
            if step == "stop":  # a clean stop: the batch is handed back at once
                grid.stop_controller(index)
                stops.append("SIGTERM")
            elif step == "kill":  # at a random instant
                grid.stop_controller(index, kill=True)
                stops.append("SIGKILL")
            elif step == "freeze past takeover":  # frozen holding a batch until a peer takes it over, then woken
                if freeze_holding_a_batch(grid, process, chaos):
                    wait_until(lambda frozen=process: not holds_batch(grid, frozen), what="the frozen batch taken over")
                    stops.append("frozen past takeover")
                process.send_signal(signal.SIGCONT)
                continue
            else:  # killed at a random instant when it holds a claimed batch
                if freeze_holding_a_batch(grid, process, chaos):
                    stops.append("SIGKILL holding a batch")
                grid.stop_controller(index, kill=True)
            grid.start_controller()

    killer = threading.Thread(target=kill_and_replace)
    killer.start()
    try:  # commands keep flowing for as long as the killer works, then the rest go at once
        for start in range(0, len(sent), 50):
            submit(grid.redis, *sent[start:start + 50])
            flowing.set()
            if killer.is_alive():
                time.sleep(0.1)
    finally:
        killer.join()
    assert stops.count("SIGKILL holding a batch") >= 1 and "frozen past takeover" in stops, stops
    assert_each_exactly_once(grid, sent, trace)


def test_controllers_running_at_once_route_each_command_once(make_grid, tmp_path):
    grid = make_grid(AGENTS, controllers=3, heartbeat_interval=0.5, controller_config=FAST, log_level="WARNING")
    trace = tmp_path / "trace"
    sent = commands_with_trace(1500, 30, trace)
    for start in range(0, len(sent), 50):
        submit(grid.redis, *sent[start:start + 50])
    assert_each_exactly_once(grid, sent, trace)
