"""Job JSON and outbox envelopes keep their exact wire shape."""

import dataclasses
import json

import pytest

from protocol import envelope
from protocol.command import decode_command
from protocol.errors import ProtocolError
from protocol.job import Job, error_job
from protocol.keys import AgentKeys, agent_name, agent_of, job_results, parse_agent_name, result_queue
from protocol.presence import Heartbeat, Registration
from protocol.states import FINAL_STATES, Phase, State

JOB_FIELDS = {"id", "gid", "nid", "cmd", "args", "data", "level", "state", "starttime", "time", "streams",
              "critical", "tags"}


def test_job_json_has_exactly_the_2015_fields():
    command = decode_command('{"id": "x", "gid": 1, "nid": 2, "cmd": "execute", "args": {"name": "ls"}, "tags": "t"}')
    job = Job.for_command(command, 1, 2)
    wire = json.loads(job.to_json())
    assert set(wire) == JOB_FIELDS
    assert wire["state"] == "RUNNING"
    routed = json.loads(Job.for_command(command, 1, 2, phase=Phase.ROUTED).to_json())
    assert set(routed) == JOB_FIELDS | {"phase"} and (routed["state"], routed["phase"]) == ("RUNNING", "routed")
    assert wire["args"] == {"name": "ls"}
    assert wire["streams"] == ["", ""]
    assert wire["tags"] == "t"
    job.pid = 42
    assert json.loads(job.to_json())["pid"] == 42
    assert Job.from_json(job.to_json()) == job


def test_error_job_is_final_with_reason():
    job = error_job("x", "agent 1:7 is not alive", gid=1, nid=7, cmd="ping")
    assert job.state == State.ERROR and job.is_final
    assert job.data == "agent 1:7 is not alive"
    assert job.starttime > 0


def test_state_spellings():
    assert [state.value for state in State] == ["RUNNING", "SUCCESS", "ERROR", "TIMEOUT", "KILLED",
                                                "UNKNOWN_CMD", "DUPLICATE_ID", "SKIPPED"]
    assert State.RUNNING not in FINAL_STATES and "QUEUED" not in set(State), "QUEUED is never a wire state"


def test_client_facing_key_names():
    assert result_queue("abc") == "cmds_queue_abc"
    assert job_results("abc") == "jobresult:abc"
    assert agent_name(1, 7) == "1:7" and parse_agent_name("1:7") == (1, 7)
    agent = AgentKeys(3, 4)
    for key in (agent.commands, agent.inflight, agent.outbox, agent.outbox_seq, agent.alive, agent.bell):
        assert key.startswith("ac:agent:3:4:")
        assert agent_of(key) == (3, 4)


def test_job_envelope_round_trip():
    job = Job("id 1", 1, 2, "ping", state=State.SUCCESS, data='"pong"', level=20)
    raw = envelope.job_envelope(job, push=True, final=True)
    header, body = envelope.decode(raw.encode())
    assert header == {"kind": "job", "id": "id 1", "push": True, "final": True, "state": "SUCCESS"}
    assert body == job.to_json()
    assert "\n" not in raw.split("\n", 1)[0]
    running = envelope.job_envelope(Job("id 1", 1, 2, "ping", state=State.RUNNING), push=False, final=False)
    assert "state" not in envelope.decode(running)[0], "only results (pushed) carry their state"


def test_register_envelope_and_a_registration_read_tolerantly():
    registration = Registration(1, 2, ("a",), "host", "1.0", 42, 1700000000, 10, 2.0, None)
    header, body = envelope.decode(envelope.register_envelope(registration))
    assert header == {"kind": "register"}
    assert json.loads(body) == {"gid": 1, "nid": 2, "roles": ["a"], "hostname": "host", "version": "1.0", "pid": 42,
                                "started": 1700000000, "max_jobs": 10, "heartbeat_interval": 2.0, "metrics": None}
    assert Registration.from_wire(1, 2, json.loads(body)) == registration
    assert set(registration.to_wire()) == {field.name for field in dataclasses.fields(Registration)}, "every field"
    older = Registration.from_wire(1, 2, {"roles": ["a", 3], "pid": True, "heartbeat_interval": "2"})
    assert older == Registration(1, 2, ("a",)) and older.heartbeat_ttl == 6.0, "an older agent is still served"
    huge = Registration.from_wire(1, 2, {"hostname": "h" * 1_000_000, "version": "v" * 256, "metrics": "m" * 255})
    assert (len(huge.hostname), huge.hostname[-4:]) == (255, "h..."), "a node's text is cut to what a table shows"
    assert (len(huge.version), len(huge.metrics)) == (255, 255) and huge.metrics == "m" * 255


def test_heartbeat_read_tolerantly():
    assert Heartbeat.from_json(Heartbeat(5, 1).to_json()) == Heartbeat(5, 1)
    assert Heartbeat.from_json(b"not json") == Heartbeat.from_json(b"[1]") == Heartbeat.from_json(None) == Heartbeat()


@pytest.mark.parametrize("raw", ["no newline", '{"kind": "nope"}\nbody', '[1]\nbody'])
def test_bad_envelopes(raw):
    with pytest.raises(ProtocolError):
        envelope.decode(raw)
