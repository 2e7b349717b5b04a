"""Many commands at once: ``Client.submit`` sends them in one round trip, ``Client.iter_results`` reads the
results of all of them as they come."""

import collections
import json
import time

import pytest
from support import TIMEOUT

from acclient import RunArgs
from protocol import keys
from protocol.errors import ProtocolError


def test_submit_sends_every_command_in_one_call_and_iter_results_reads_them_all(grid):
    client = grid.client()
    cmds = client.submit([{"gid": 1, "nid": 1, "cmd": "ping"}] * 300 + [{"gid": None, "nid": None, "cmd": "ping",
                                                                        "role": "web", "fanout": True}])
    assert len({cmd.id for cmd in cmds}) == 301
    got = collections.Counter(job.id for job in client.iter_results(cmds, timeout=TIMEOUT))
    logged = [json.loads(raw) for raw in grid.redis.lrange(keys.JOBLOG, 0, 400)]
    stamps = {command["queued"] for command in logged if command["id"] in {cmd.id for cmd in cmds}}
    assert len(stamps) == 1, "one script call took them all: one stamp of the bus's clock"
    assert got == {cmd.id: 1 for cmd in cmds[:300]} | {cmds[300].id: 2}, "each once, the fanout once per agent"
    assert cmds[300].report() == {(1, 1): "returned", (1, 2): "returned"}
    assert all(grid.redis.llen(keys.result_queue(cmd.id)) == 0 for cmd in cmds), "every result was popped"


def test_iter_results_yields_each_result_as_it_comes_whichever_command_it_is_of(grid):
    client = grid.client()
    slow = client.execute(1, 1, "sleep", ["1.5"])
    fast = client.submit([{"gid": 1, "nid": 2, "cmd": "ping"}] * 3)
    started, order = time.monotonic(), []
    for job in client.iter_results([slow, *fast], timeout=TIMEOUT):
        order.append((job.id, round(time.monotonic() - started, 1)))
    assert {job_id for job_id, _ in order[:3]} == {cmd.id for cmd in fast}, "the pings first"
    assert order[-1][0] == slow.id and order[2][1] < 1.0 <= order[-1][1]


def test_iter_results_ends_at_its_timeout_and_reports_who_did_not_reply(grid):
    client = grid.client()
    [stuck, done] = client.submit([{"gid": 1, "nid": 1, "cmd": "execute", "args": RunArgs(name="sleep", args=["30"],
                                                                                         max_time=10)},
                                   {"gid": 1, "nid": 2, "cmd": "ping"}])
    started = time.monotonic()
    assert [job.id for job in client.iter_results([stuck, done], timeout=2)] == [done.id]
    assert 2 <= time.monotonic() - started < 4
    assert stuck.report() == {(1, 1): "no reply"} and done.report() == {(1, 2): "returned"}
    stuck.kill()


def test_a_bad_command_in_a_submit_sends_none(grid):
    client = grid.client()
    queued = grid.redis.llen(keys.CMDS_QUEUE)
    with pytest.raises(ProtocolError, match="nid"):
        client.submit([{"gid": 1, "nid": 1, "cmd": "ping"}, {"gid": None, "nid": None, "cmd": "ping"}])
    assert grid.redis.llen(keys.CMDS_QUEUE) == queued
    assert client.submit([]) == []
    assert list(client.iter_results([], timeout=1)) == []
