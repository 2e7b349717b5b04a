"""During a rolling upgrade controllers are newer than some agents: an agent of the previous wire, whose registration
carries gid, nid and roles only (no hostname, version, pid, start time, max_jobs, heartbeat interval or metrics
address), is still registered, listed, routed to by id, by role and by fanout, and its results reach the client.
The old agent is played by the test, writing raw envelopes into its outbox as such an agent did."""

import json
import re
import time

from support import TIMEOUT, scrape, value, wait_until

from acgrid.launcher import AgentSpec
from protocol import envelope, keys
from protocol.job import Job, now_ms
from protocol.states import State

METRICS = {"metrics": {"listen": "127.0.0.1:0"}}
#: The register envelope of an agent of the previous wire: the header, then gid, nid and roles only.
OLD_REGISTRATION = '{"kind":"register"}\n{"gid":1,"nid":9,"roles":["web"]}'
OLD = keys.AgentKeys(1, 9)


def serve_one(bus, data: str) -> dict:
    """As the old agent: take the next command routed to it (as agents take them, into its inflight list) and
    answer it, its result and the end of the command in one outbox write; return the command."""
    raw = bus.blmove(OLD.commands, OLD.inflight, TIMEOUT, "LEFT", "RIGHT")
    assert raw is not None, "nothing was routed to the old agent"
    command = json.loads(raw)
    job = Job(command["id"], 1, 9, command["cmd"], args=command.get("args") or {}, data=data, level=20,
              state=State.SUCCESS, starttime=now_ms(), time=1)
    pipe = bus.pipeline(transaction=True)
    pipe.rpush(OLD.outbox, envelope.job_envelope(job, push=True, final=True))
    pipe.lrem(OLD.inflight, 1, raw)
    pipe.publish(OLD.bell, "")
    pipe.execute()
    return command


def test_an_agent_of_the_previous_wire_is_served(make_grid):
    grid = make_grid([AgentSpec(1, 1, ("web",))], heartbeat_interval=0.3, controller_config=METRICS)
    bus = grid.redis
    bus.set(OLD.alive, json.dumps({"time": now_ms(), "running": 0}), px=120_000)  # it beats (long enough for a test)
    with bus.pubsub(ignore_subscribe_messages=True) as events:
        events.subscribe(keys.EVENTS)
        bus.rpush(OLD.outbox, OLD_REGISTRATION)
        bus.publish(OLD.bell, "")
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert time.monotonic() < deadline, "the old agent's registration was not taken"
            message = events.get_message(timeout=1)  # None also for the subscription's confirmation
            event = json.loads(message["data"]) if message else {}
            if event.get("event") == "agent_registered" and event["agent"] == "1:9":
                break
    assert event["registration"]["roles"] == ["web"] and event["registration"]["hostname"] is None

    client = grid.client()
    listed = {(agent["gid"], agent["nid"]): agent for agent in client.list_agents()}
    assert listed[(1, 9)]["alive"] is True and listed[(1, 9)]["roles"] == ["web"]
    assert (listed[(1, 9)]["version"], listed[(1, 9)]["hostname"]) == (None, None)

    by_id = client.cmd(1, 9, "ping", None)
    assert serve_one(bus, "pong")["id"] == by_id.id
    answered = by_id.get_next_result(TIMEOUT)
    assert (answered.gid, answered.nid, answered.state, answered.data) == (1, 9, "SUCCESS", "pong")

    fanout = client.cmd(None, None, "ping", None, role="web", fanout=True)
    assert serve_one(bus, "pong from the old one")["id"] == fanout.id
    results = {(job.gid, job.nid): job for job in fanout.iter_results(timeout=TIMEOUT)}
    assert set(results) == {(1, 1), (1, 9)} and results[(1, 9)].data == "pong from the old one"
    assert all(job.state == "SUCCESS" for job in results.values())

    with bus.pubsub(ignore_subscribe_messages=True) as events:  # the new agent gone: the role has the old one only
        events.subscribe(keys.EVENTS)
        grid.stop_agent("1:1")
        wait_until(lambda: (message := events.get_message(timeout=1)) is not None
                   and json.loads(message["data"]) == {"event": "agent_lost", "agent": "1:1"},
                   what="agent 1:1 judged lost")
    cmd = client.cmd(None, None, "ping", None, role="web")
    assert serve_one(bus, "by role")["id"] == cmd.id
    job = cmd.get_next_result(TIMEOUT)
    assert (job.gid, job.nid) == (1, 9)
    assert (job.state, job.data) == ("SUCCESS", "by role")

    address = re.search(r"metrics on http://(\S+)/metrics", grid.log_path("controller-0").read_text()).group(1)
    assert value(scrape(address), "ac_agent_up", gid="1", nid="9", host="") == 1, "its host is unknown, not an error"
