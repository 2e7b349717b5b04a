"""SIGTERM stops each daemon gracefully: the controller routes what it claimed, the agent says what it leaves."""

import json
import signal

from support import start_controller, wait_state, wait_until

from acclient import RunArgs
from acgrid.launcher import AgentSpec
from protocol import keys
from protocol.keys import AgentKeys


def test_sigterm_stops_a_busy_controller_without_losing_reordering_or_repeating_a_command(make_grid):
    grid = make_grid([AgentSpec(1, 1)])
    grid.stop_controller(0)
    sink = AgentKeys(9, 9)  # registered and beating, but nobody takes its commands: they stay countable
    grid.redis.hset(keys.AGENTS, sink.name, json.dumps({"gid": 9, "nid": 9, "roles": ["sink"]}))
    grid.redis.set(sink.alive, json.dumps({"time": 0, "running": 0}), px=600_000)
    sent = [f"c{number}" for number in range(30_000)]
    for start in range(0, len(sent), 1000):
        grid.redis.rpush(keys.CMDS_QUEUE, *(json.dumps({"id": id_, "cmd": "ping", "role": "sink"})
                                           for id_ in sent[start:start + 1000]))
    process, _ = start_controller(grid, {})
    wait_until(lambda: grid.redis.llen(sink.commands) > 0, what="routing under way")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0

    routed = [json.loads(raw)["id"] for raw in grid.redis.lrange(sink.commands, 0, -1)]
    waiting = [json.loads(raw)["id"] for raw in grid.redis.lrange(keys.CMDS_QUEUE, 0, -1)]
    assert routed + waiting == sent, "each command routed once or waiting, in order"
    assert waiting, "stopped mid-stream (else this test proves little)"
    assert not list(grid.redis.scan_iter(match=keys.CONTROLLER_INFLIGHT_PATTERN)), "no batch left behind"
    queued = grid.redis.pipeline()
    for id_ in (routed[0], routed[-1]):
        queued.hget(keys.job_results(id_), sink.name)
    assert [(json.loads(job)["state"], json.loads(job)["phase"]) for job in queued.execute()] == \
        [("RUNNING", "routed")] * 2
    log = grid.log_path("controller-x").read_text()
    assert "stopping: routing the commands it claimed" in log and f"after routing {len(routed)} commands" in log


def test_sigterm_agent_says_which_long_running_jobs_start_again(make_grid):
    grid = make_grid([AgentSpec(1, 1)])
    client = grid.client()
    lasting = client.execute(1, 1, "sleep", ["60"], args=RunArgs(max_time=-1))
    plain = client.execute(1, 1, "sleep", ["60"])
    for job in (lasting, plain):
        wait_state(client, job.id, "RUNNING")
    grid.stop_agent("1:1")
    assert wait_state(client, plain.id, "KILLED").data == "killed: the agent stopped"
    assert f"stopping 1 jobs (answered KILLED); 1 long-running jobs ({lasting.id}) stop quietly and start again " \
           "with the next agent" in grid.log_path("agent-1-1").read_text()
