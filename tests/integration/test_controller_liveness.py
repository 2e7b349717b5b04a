"""Agents that die and come back, bounded bookkeeping, schedules and event handlers, on real grids."""

import json
import signal
import sys
import time

from support import command, controller_command, result, run, says_result_dropped, submit, wait_until

from acgrid.launcher import AgentSpec
from protocol import keys

HEARTBEAT = 0.5
FAST = {"agents": {"sweep_interval": 0.1}, "routing": {"takeover_after": 1.0}}


def log_of(grid, name):
    return grid.log_path(name).read_text(errors="replace")


def controller_logs(grid):
    return "".join(log_of(grid, f"controller-{index}") for index in range(len(grid.controllers)))


def test_lost_agent_is_answered_in_time_and_routable_again_at_once(make_grid):
    grid = make_grid([AgentSpec(1, 1, ("web",)), AgentSpec(1, 2, ("web",))], controllers=2,
                     heartbeat_interval=HEARTBEAT, controller_config=FAST)
    bus = grid.redis
    long_job = command("execute", gid=1, nid=1, args={"name": "sleep", "args": ["5"]})
    submit(bus, long_job)
    wait_until(lambda: b"RUNNING" in (bus.hget(keys.job_results(long_job["id"]), "1:1") or b""),
               what="the job runs")

    killed_at = time.monotonic()
    grid.stop_agent("1:1", kill=True)
    lost = result(bus, long_job["id"])
    answered_after = time.monotonic() - killed_at
    assert (lost["state"], lost["data"], lost["id"]) == ("ERROR", "agent 1:1 lost", long_job["id"])
    assert answered_after <= 3 * HEARTBEAT + 1, f"answered {answered_after:.2f} s after the agent died"
    assert bus.hlen(keys.running_jobs(1, 1)) == 0

    # Until every controller's sweep has seen the loss (a tenth of a second here), a command may
    # still be routed to the dead agent; it is then answered as lost, never left waiting.
    refused = run(bus, gid=1, nid=1)
    assert (refused["state"], refused["data"]) in {("ERROR", "agent 1:1 is not alive"), ("ERROR", "agent 1:1 lost")}

    grid.start_agent("1:1")
    pings = [command(gid=1, nid=1) for _ in range(20)]  # both controllers route some of them
    submit(bus, *pings)
    assert {result(bus, ping["id"])["state"] for ping in pings} == {"SUCCESS"}

    # The restarted agent still held the long job and answers it as interrupted: that late
    # result is dropped, the client keeps exactly the one answer it got.
    wait_until(lambda: says_result_dropped(controller_logs(grid), long_job["id"]), what="the late result dropped")
    assert bus.llen(keys.result_queue(long_job["id"])) == 0
    assert json.loads(bus.hget(keys.job_results(long_job["id"]), "1:1"))["data"] == "agent 1:1 lost"


def test_a_silent_agent_shows_queued_then_lost_and_its_late_answer_is_dropped(make_grid):
    grid = make_grid([AgentSpec(1, 1)], heartbeat_interval=HEARTBEAT, controller_config=FAST)
    bus = grid.redis
    agent = grid.agents["1:1"]
    # Stop it while it waits for commands, so the command below is taken, just never answered in time
    # (stopped earlier, the command would wait in its queue, and be withdrawn once answered as lost).
    wait_until(lambda: any(client["cmd"] == "blmove" and client["name"].startswith("ac-agent-1:1")
                           for client in bus.client_list()), what="the agent waiting in BLMOVE")
    agent.send_signal(signal.SIGSTOP)
    try:
        sent = command(gid=1, nid=1)
        submit(bus, sent)
        queued = json.loads(wait_until(lambda: bus.hget(keys.job_results(sent["id"]), "1:1"), what="routed"))
        assert (queued["state"], queued["phase"]) == ("RUNNING", "routed")
        lost = result(bus, sent["id"])
        assert (lost["state"], lost["data"]) == ("ERROR", "agent 1:1 lost")
    finally:
        agent.send_signal(signal.SIGCONT)
    wait_until(lambda: says_result_dropped(controller_logs(grid), sent["id"]), what="the late answer dropped")
    assert bus.llen(keys.result_queue(sent["id"])) == 0
    client = grid.client()
    wait_until(lambda: client.list_agents(alive=True), what="the agent seen alive again (its heartbeat had expired)")
    assert run(bus, gid=1, nid=1)["state"] == "SUCCESS"


def test_results_expire_but_not_while_the_job_runs_and_joblog_is_trimmed(make_grid):
    config = {**FAST, "results": {"result_ttl": 2, "joblog_max": 5}}
    grid = make_grid([AgentSpec(1, 1)], heartbeat_interval=HEARTBEAT, controller_config=config)
    bus = grid.redis
    sent = command("execute", gid=1, nid=1, args={"name": "sleep", "args": ["4"]})
    submit(bus, sent)
    results_key = keys.job_results(sent["id"])
    wait_until(lambda: bus.exists(results_key), what="jobresult written")
    while not bus.exists(keys.result_queue(sent["id"])):  # until the final result is pushed
        ttl = bus.ttl(results_key)
        assert 0 < ttl <= 2, f"jobresult:<id> must live while the job runs (ttl {ttl})"
        time.sleep(0.05)
    assert 0 < bus.ttl(keys.result_queue(sent["id"])) <= 2
    assert result(bus, sent["id"])["state"] == "SUCCESS"
    wait_until(lambda: not bus.exists(results_key), timeout=10, what="jobresult expired")

    for _ in range(8):
        run(bus, gid=1, nid=1)
    assert bus.llen(keys.JOBLOG) == 5


def test_schedules_tick_once_across_controllers_and_survive_restarts(make_grid):
    grid = make_grid([AgentSpec(1, 1)], controllers=2, heartbeat_interval=HEARTBEAT, controller_config=FAST)
    bus = grid.redis
    schedule = {"id": "nightly", "cron": "0 3 * * *", "cmd": {"cmd": "ping", "role": "*", "tags": "cron"}}
    added = controller_command(bus, "scheduler_add", schedule)
    assert added["state"] == "SUCCESS"
    assert json.loads(added["data"])["next"] > time.time() * 1000

    def tick_now_and_wait(previous):
        bus.zadd(keys.SCHEDULES_DUE, {"nightly": int(time.time() * 1000)})
        listed = wait_until(lambda: _listed_last(bus, previous), what="a tick submitted")
        assert listed["next"] > time.time() * 1000, "the next tick is tomorrow at 03:00"
        job = result(bus, listed["last"]["id"])
        assert (job["state"], job["tags"], job["gid"], job["nid"]) == ("SUCCESS", "cron", 1, 1)
        return listed["last"]["id"]

    ticks = [None]
    for _ in range(3):
        ticks.append(tick_now_and_wait(ticks[-1]))
    grid.stop_controller(0, kill=True)
    grid.stop_controller(1, kill=True)
    grid.start_controller()
    ticks.append(tick_now_and_wait(ticks[-1]))

    logged = [json.loads(raw) for raw in bus.lrange(keys.JOBLOG, 0, -1)]
    pinged = [entry["id"] for entry in logged if entry["cmd"] == "ping"]
    assert sorted(pinged) == sorted(ticks[1:]), "each tick submitted exactly once, each with a fresh id"
    assert len(set(pinged)) == 4

    assert json.loads(controller_command(bus, "scheduler_remove", {"id": "nightly"})["data"]) == {"id": "nightly"}
    assert json.loads(controller_command(bus, "scheduler_list")["data"]) == []
    assert not bus.exists(keys.SCHEDULES_DUE)


def _listed_last(bus, previous):
    listed = json.loads(controller_command(bus, "scheduler_list")["data"])
    assert [schedule["id"] for schedule in listed] == ["nightly"]
    last = listed[0]["last"]
    return listed[0] if last and last["id"] != previous else None


HANDLER = """
import sys
with open(sys.argv[1], "a") as out:
    out.write(" ".join(sys.argv[2:]) + "\\n")
"""


def test_event_handlers_run_once_per_registration(make_grid, tmp_path):
    script, out = tmp_path / "handler.py", tmp_path / "events.txt"
    script.write_text(HANDLER)
    handler = f"{sys.executable} {script} {out}"
    events = {"agent_registered": f"{handler} registered {{gid}} {{nid}}",
              "agent_returned": f"{handler} returned {{gid}}:{{nid}}"}
    grid = make_grid([AgentSpec(2, 5)], controllers=2, heartbeat_interval=HEARTBEAT,
                     controller_config={**FAST, "events": events})

    def lines():
        return out.read_text().splitlines() if out.exists() else []

    wait_until(lambda: "registered 2 5" in lines(), what="the registration handler")
    for restarts in (1, 2):
        grid.stop_agent("2:5")
        grid.start_agent("2:5")
        wait_until(lambda restarts=restarts: lines().count("returned 2:5") == restarts, what="the return handler")
    assert sorted(lines()) == ["registered 2 5", "returned 2:5", "returned 2:5"]


def test_a_failing_event_handler_is_logged_and_harmless(make_grid):
    events = {"agent_registered": "/no/such/handler {gid}", "agent_returned": "sh -c 'echo oops >&2; exit 3'",
              "handler_timeout": 5}
    grid = make_grid([AgentSpec(1, 1)], heartbeat_interval=HEARTBEAT, controller_config={**FAST, "events": events})
    wait_until(lambda: "agent_registered handler '/no/such/handler' for agent 1:1 could not start"
               in controller_logs(grid), what="the failure logged")
    grid.stop_agent("1:1")
    grid.start_agent("1:1")
    wait_until(lambda: "agent_returned handler 'sh' for agent 1:1 failed with exit code 3: oops"
               in controller_logs(grid), what="the failure logged")
    assert grid.controllers[0].poll() is None
    assert run(grid.redis, gid=1, nid=1)["state"] == "SUCCESS"



def test_the_bus_restarting_empty_stops_nothing(make_grid):
    grid = make_grid([AgentSpec(1, 1)], controllers=2, heartbeat_interval=HEARTBEAT, controller_config=FAST)
    assert run(grid.redis, gid=1, nid=1)["state"] == "SUCCESS"
    grid.redis_server.process.terminate()
    grid.redis_server.process.wait()
    grid.redis_server.restart(empty=True)  # no scripts, no registrations, no heartbeats

    def answered():
        job = run(grid.redis, gid=1, nid=1)
        return job if job["state"] == "SUCCESS" else None

    assert wait_until(answered, what="routing again after the bus came back")
    assert all(process.poll() is None for process in grid.controllers)
    sent = command(role="*", fanout=True)
    submit(grid.redis, sent)
    assert result(grid.redis, sent["id"])["state"] == "SUCCESS"
