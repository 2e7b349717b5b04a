"""Redis restarted empty (no persistence) under a working grid: what agents still hold is adopted again,
and every client waiting on a command the bus lost hears so, instead of blocking. Counted: results lost,
results duplicated, clients left waiting."""

import time

import redis
from support import TIMEOUT, wait_state, wait_until

import acclient
from acgrid.launcher import AgentSpec
from protocol import keys

FAST = {"agents": {"sweep_interval": 0.1}, "routing": {"takeover_after": 1.0}}
#: Seconds Redis stays away: jobs end meanwhile.
OUTAGE = 4.0


def test_jobs_agents_still_hold_are_adopted_and_lost_commands_are_answered(make_grid):
    grid = make_grid([AgentSpec(1, 1), AgentSpec(1, 2)], heartbeat_interval=0.5, controller_config=FAST)
    client = grid.client()
    # Twelve jobs: six end while Redis is away, six after it is back.
    jobs = [client.execute(1, 1 + index % 2, "bash", ["-c", f"sleep {2 if index < 6 else OUTAGE + 8}; "
                                                              f"echo 20::done-{index}"], id=f"job-{index}")
            for index in range(12)]
    forever = client.execute(1, 1, "sleep", ["300"], args=acclient.RunArgs(max_time=-1), id="forever")
    for cmd in [*jobs, forever]:
        wait_state(client, cmd.id, "RUNNING", agent=(cmd.gid, cmd.nid))
    forever_pid = client.get_cmd_jobs("forever")[(1, 1)].get("pid")

    grid.stop_controller(0)  # so that the next commands wait in cmds_queue, where the outage takes them
    waiting = [client.cmd(1, 1, "ping", None, id=f"waiting-{index}") for index in range(50)]
    assert grid.redis.llen(keys.CMDS_QUEUE) == 50
    grid.redis_server.stop()
    time.sleep(OUTAGE)  # the fault itself: nothing to wait for but time
    grid.redis_server.restart(empty=True)
    grid.start_controller(0)

    results = {}
    for cmd in jobs:
        job = cmd.get_next_result(60)
        results[cmd.id] = (job.state, job.data)
    lost_results = sum(results[f"job-{index}"] != ("SUCCESS", f"done-{index}") for index in range(12))
    duplicated = sum(grid.redis.llen(keys.result_queue(cmd.id)) for cmd in jobs)
    print(f"12 jobs across an empty restart: {lost_results} results lost, {duplicated} duplicated")
    assert (lost_results, duplicated) == (0, 0), results

    started = time.monotonic()
    told, waited = 0, []
    for cmd in waiting:
        try:
            cmd.get_next_result(60)
        except acclient.CommandLost as exc:
            told += 1
            assert str(exc).startswith(f"command {cmd.id} was lost: the bus lost its data")
        waited.append(time.monotonic() - started)
    print(f"50 commands lost with the bus: {told} clients told (all within {waited[-1]:.1f} s), "
          f"{50 - told} left waiting")
    assert told == 50

    again = client.get_cmd_jobs("forever")[(1, 1)]
    assert (again.state, again.get("pid")) == ("RUNNING", forever_pid), "the long-running job was adopted as it ran"
    forever.kill()
    assert forever.get_next_result(TIMEOUT).state == "KILLED"
    assert client.cmd(1, 2, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"


def test_a_live_controller_notices_the_bus_lost_its_data(make_grid):
    grid = make_grid([AgentSpec(1, 1)], heartbeat_interval=0.5, controller_config=FAST)
    client = grid.client()
    cmd = client.execute(1, 1, "bash", ["-c", "sleep 3; echo 20::survived"])
    wait_state(client, cmd.id, "RUNNING")
    grid.redis_server.stop()
    grid.redis_server.restart(empty=True)
    assert cmd.get_next_result(60).data == "survived"
    log = grid.log_path("controller-0")
    wait_until(lambda: "the bus lost its data" in log.read_text(), what="the controller saying the bus lost its data")
    assert "still runs 1 jobs the bus had forgotten" in log.read_text()
    plain = redis.Redis(**grid.address.redis_kwargs())
    assert plain.get(keys.BUS_EPOCH) is not None and plain.pttl(keys.ADOPTING) > 0
