"""5 000 agents on one bus keep every guarantee: exactly-once routing, lost agents answered within 3 beats
plus a second, a dead controller's batches taken over (swarm identities: each a full agent on the wire)."""

import collections
import contextlib
import json
import signal
import time
import uuid

import psutil
import pytest
from support import TIMEOUT, wait_until

from acgrid.launcher import AgentSpec, Grid
from acgrid.redis_server import RedisServer
from bench.scale import raise_file_limit
from protocol import keys

SIZE = 5000
HALF = SIZE // 2
BEAT = 2.0  # the agents' default heartbeat interval: lost after 3 beats
CONFIG = {"agents": {"sweep_interval": 0.5}, "routing": {"takeover_after": 2.0}}


@pytest.fixture(scope="module")
def fleet():
    """Two controllers; agents 1:1..1:2500 (role "a") and 1:2501..1:5000 (role "b"), one swarm process each."""
    raise_file_limit(4 * SIZE)
    with RedisServer(extra_args=("--maxclients", str(2 * SIZE + 500)), persistence=False) as server, \
            Grid([AgentSpec(1, 1, ("a",), swarm=HALF), AgentSpec(1, HALF + 1, ("b",), swarm=HALF)],
                 bus_url=server.url, controllers=2, heartbeat_interval=BEAT, controller_config=CONFIG,
                 log_level="WARNING") as grid:
        yield grid


def answers(bus, ids: list[str], deadline: float) -> collections.Counter[str]:
    """How many results each of ``ids`` got, popping them as they come: until ``deadline``, or a second after
    each had one (a duplicate would come from a takeover, which is over once every command was answered)."""
    got: collections.Counter[str] = collections.Counter()
    queues = [keys.result_queue(command_id) for command_id in ids]
    settled = deadline
    while time.monotonic() < min(deadline, settled):
        with bus.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.lpop(queue, 100)
            for command_id, popped in zip(ids, pipe.execute(), strict=True):
                got[command_id] += len(popped or [])
        if settled == deadline and all(got[command_id] for command_id in ids):
            settled = time.monotonic() + 1.0
        time.sleep(0.05)
    return got


def stop_leftovers(job_id: str) -> None:
    """Kill the processes of job ``job_id`` that outlived their agent (``AGENT_JOBID`` in their environment)."""
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("AGENT_JOBID") == job_id:
                process.kill()


@pytest.mark.slow
def test_a_fanout_reaches_each_of_5000_agents_once(fleet):
    client = fleet.client()
    # Registered is not yet beating: under load, a swarm still busy starting its agents may be late with some
    # heartbeats, and a fanout answers the agents not alive at once ("not alive"), as it should.
    wait_until(lambda: len(client.list_agents(TIMEOUT, alive=True)) == SIZE, what="every agent seen alive",
               timeout=3 * TIMEOUT, interval=0.5)
    cmd = client.cmd(None, None, "ping", None, role="*", fanout=True)
    results = list(cmd.iter_results(timeout=3 * TIMEOUT))
    agents = collections.Counter((job.gid, job.nid) for job in results if job.state == "SUCCESS")
    others = collections.Counter((job.state, job.data) for job in results if job.state != "SUCCESS")
    assert len(agents) == SIZE and set(agents.values()) == {1}, f"{len(agents)} answered SUCCESS; else {others}"


@pytest.mark.slow
def test_role_commands_through_a_controller_sigkill_are_answered_once_each(fleet):
    bus = fleet.redis
    ids = [f"scale-{uuid.uuid4().hex[:8]}-{index}" for index in range(2000)]
    commands = [json.dumps({"id": command_id, "cmd": "ping", "role": "a"}) for command_id in ids]
    with bus.pipeline(transaction=False) as pipe:
        for command in commands[:1000]:
            pipe.rpush(keys.CMDS_QUEUE, command)
        pipe.execute()
    fleet.stop_controller(0, kill=True)  # mid-stream: what it claimed and did not route is the peer's
    with bus.pipeline(transaction=False) as pipe:
        for command in commands[1000:]:
            pipe.rpush(keys.CMDS_QUEUE, command)
        pipe.execute()
    got = answers(bus, ids, time.monotonic() + 3 * TIMEOUT)
    lost = [command_id for command_id in ids if got[command_id] == 0]
    twice = [command_id for command_id in ids if got[command_id] > 1]
    assert (len(lost), len(twice)) == (0, 0), f"lost {lost[:5]}, answered twice {twice[:5]}"
    fleet.start_controller(0)


@pytest.mark.slow
def test_2500_agents_killed_at_once_have_their_jobs_answered_within_3_beats_and_a_second(fleet, request):
    client = fleet.client()
    cmd = client.execute(None, None, "sleep", ["300"], role="b", fanout=True)
    def started() -> bool:
        jobs = [json.loads(raw) for raw in fleet.redis.hvals(keys.job_results(cmd.id))]
        return len(jobs) == HALF and all(job.get("phase") is None for job in jobs)

    wait_until(started, timeout=3 * TIMEOUT, what="every job started")
    request.addfinalizer(lambda: stop_leftovers(cmd.id))  # a restarted agent would stop them; this one stays down
    fleet.agents[f"1:{HALF + 1}"].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    answered = {(job.gid, job.nid): (job.state, job.data) for job in cmd.iter_results(timeout=3 * TIMEOUT)}
    within = time.monotonic() - killed
    assert answered == {(1, nid): ("ERROR", f"agent 1:{nid} lost") for nid in range(HALF + 1, SIZE + 1)}
    assert within <= 3 * BEAT + 1, f"the last of {HALF} lost jobs was answered {within:.1f} s after the kill"
