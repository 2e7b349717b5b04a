"""Redis goes away for 30 s and comes back: the agent keeps its jobs running, reconnects, and
delivers the results and messages produced meanwhile.

The bus is snapshotted (SAVE) just before it stops, as a Redis with persistence would be, so after
the restart it still knows which jobs were routed where; what happened during the outage exists only
in the agent's spool until it reconnects.
"""

import json
import time

import pytest
import redis
from support import current, group_members, wait_state, wait_until

import acclient
from acgrid.launcher import AgentSpec
from protocol import keys

OUTAGE = 30.0
TICKS = 20
LOGGING = {"db": {"type": "DB", "log_dir": "logs"},
           "ac": {"type": "AC", "flush_int": 0.2, "levels": "4,20"}}


@pytest.mark.slow
def test_the_agent_rides_out_a_bus_outage(make_grid):
    grid = make_grid([AgentSpec(1, 1, config={"logging": LOGGING, "main": {"kill_grace": 1}})],
                     heartbeat_interval=0.3)
    client = grid.client()
    client.execute(1, 1, "sleep", ["300"], args=acclient.RunArgs(max_time=-1), id="steady")
    steady_pid = wait_state(client, "steady", "RUNNING").get("pid")
    script = f"for i in $(seq 1 {TICKS}); do echo 4::tick $i; sleep 0.5; done; echo 20::done"
    client.execute(1, 1, "bash", ["-c", script], id="through")  # ends about 10 s into the outage
    wait_state(client, "through", "RUNNING")
    grid.redis.save()
    grid.redis_server.stop()
    stopped_at = time.time()
    time.sleep(OUTAGE)  # the scenario itself: nothing to wait for but time
    assert group_members(steady_pid)  # the long-running job kept running while the bus was away
    grid.redis_server.restart()

    bus = redis.Redis(**grid.address.redis_kwargs())  # clients made before the outage hold dead connections
    client = grid.client()
    popped = bus.blpop(keys.result_queue("through"), timeout=60)
    assert popped is not None, "no result for the job that ended during the outage"
    result = acclient.Job(client, popped[1])
    assert (result.state, result.data) == ("SUCCESS", "done")
    assert result.starttime / 1000 < stopped_at < (result.starttime + result.time) / 1000  # ran across the outage
    def every_tick_logged() -> bool:
        logged = {message["data"] for message in map(json.loads, bus.lrange(keys.agent_logs(1, 1), 0, -1))
                  if message["jobid"] == "through"}
        return logged >= {f"tick {i}" for i in range(1, TICKS + 1)}

    logged = wait_until(every_tick_logged, what="every tick, also those of the outage, in the controller's log")
    assert logged
    assert current(client, "steady").get("pid") == steady_pid  # the same run, never restarted
    wait_until(lambda: bus.exists(keys.AgentKeys(1, 1).alive),
               what="the agent beating again (its intake reconnects with a backoff of up to 5 s)")
    client.cmd(1, 1, "kill", None, data=json.dumps({"id": "steady"}))
    wait_state(client, "steady", "KILLED")
