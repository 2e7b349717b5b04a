"""How long results are kept: ``result_ttl`` per command, never past the controller's."""

import json

import pytest
from cli_support import ac
from support import TIMEOUT, result, submit, wait_until

from acgrid.launcher import AgentSpec, Grid
from protocol import keys
from protocol.errors import ProtocolError

FAST = {"agents": {"sweep_interval": 0.2}, "routing": {"takeover_after": 1.0}, "results": {"result_ttl": 3600}}


@pytest.fixture(scope="module")
def grid():
    with Grid([AgentSpec(1, 1, ("web",)), AgentSpec(1, 2, ("web",))], heartbeat_interval=0.3,
              controller_config=FAST) as grid:
        yield grid


def kept(grid, command_id: str) -> int:
    """Seconds ``jobresult:<id>`` has left (-2: gone, -1: kept for ever)."""
    return grid.redis.ttl(keys.job_results(command_id))


def test_a_command_keeps_its_results_as_long_as_it_asks(grid):
    client = grid.client()
    short = client.cmd(1, 1, "ping", None, result_ttl=30)
    assert short.get_next_result(timeout=TIMEOUT).state == "SUCCESS"
    assert 0 < kept(grid, short.id) <= 30
    plain = client.cmd(1, 1, "ping", None)
    assert plain.get_next_result(timeout=TIMEOUT).state == "SUCCESS"
    assert 30 < kept(grid, plain.id) <= 3600, "without result_ttl: the controller's"
    greedy = client.cmd(1, 1, "ping", None, result_ttl=10 ** 7)
    assert greedy.get_next_result(timeout=TIMEOUT).state == "SUCCESS"
    assert 30 < kept(grid, greedy.id) <= 3600, "never longer than the controller keeps results"


def test_answers_of_the_controller_and_of_each_fanout_target_keep_it_too(grid):
    client = grid.client()
    submit(grid.redis, {"id": "nowhere", "cmd": "ping", "gid": 1, "nid": 9, "result_ttl": 20})
    wait_until(lambda: grid.redis.llen(keys.result_queue("nowhere")), what="the answer queued")
    assert 0 < kept(grid, "nowhere") <= 20 and 0 < grid.redis.ttl(keys.result_queue("nowhere")) <= 20, \
        "the result queue, not popped yet, is kept as long"
    fanout = client.cmd(None, None, "ping", None, role="web", fanout=True, result_ttl=20)
    assert [job.state for job in fanout.iter_results(timeout=TIMEOUT)] == ["SUCCESS", "SUCCESS"]
    assert 0 < kept(grid, fanout.id) <= 20


def test_a_running_job_holds_its_result_ttl_and_a_lost_agent_answers_with_it(grid):
    client = grid.client()
    job = client.execute(1, 2, "sleep", ["60"], result_ttl=25)
    job.wait_started(timeout=TIMEOUT)
    assert grid.redis.hget(keys.running_jobs(1, 2), job.id) == b"25", "the agent's open jobs hold it"
    assert 0 < kept(grid, job.id) <= 25
    grid.stop_agent("1:2", kill=True)
    lost = job.get_next_result(timeout=TIMEOUT)
    assert (lost.state, lost.data) == ("ERROR", "agent 1:2 lost")
    assert 0 < kept(grid, job.id) <= 25
    grid.start_agent("1:2")


@pytest.mark.parametrize("value", [0, -5, 1.5, "60", True])
def test_a_result_ttl_that_is_no_whole_number_of_seconds_is_refused(grid, value):
    submit(grid.redis, {"id": f"bad-ttl-{value!r}", "cmd": "ping", "gid": 1, "nid": 1, "result_ttl": value})
    answer = result(grid.redis, f"bad-ttl-{value!r}")
    assert answer["state"] == "ERROR" and "result_ttl" in answer["data"]
    with pytest.raises(ProtocolError, match="result_ttl"):
        grid.client().cmd(1, 1, "ping", None, result_ttl=value)


def test_an_accepted_command_records_result_ttl_in_the_joblog(grid):
    cmd = grid.client().cmd(1, 1, "ping", None, result_ttl=40)
    cmd.get_next_result(timeout=TIMEOUT)
    logged = wait_until(lambda: next((json.loads(raw) for raw in grid.redis.lrange(keys.JOBLOG, 0, 20)
                                      if json.loads(raw)["id"] == cmd.id), None), what="the command in joblog")
    assert logged["result_ttl"] == 40


def test_ac_exec_asks_for_it(grid):
    ran = ac(grid.bus_url, "exec", "-g", "1", "-n", "1", "--result-ttl", "45", "--", "true")
    assert ran.code == 0, ran.err
    assert 0 < kept(grid, ran.job_id) <= 45
