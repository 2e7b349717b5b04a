"""A program written for the 2015 client, speaking raw Redis, works unchanged."""

import json
import uuid

JOB_FIELDS = {"id", "gid", "nid", "cmd", "args", "data", "level", "state", "starttime", "time", "streams",
              "critical", "tags"}


def command_2015(cmd, gid=None, nid=None, role=None, fanout=False, args=None, data=None):
    """The command JSON exactly as the 2015 client's ``Cmd.dump`` builds it: gid/nid 0 when unset, only the
    truthy run arguments (``loglevels`` defaults to ``'*'``), data JSON-encoded or ``''``, role always there."""
    run_args = {key: value for key, value in {"loglevels": "*", **(args or {})}.items() if value}
    return {"id": str(uuid.uuid4()), "gid": gid or 0, "nid": nid or 0, "role": role, "fanout": fanout, "cmd": cmd,
            "args": run_args, "data": json.dumps(data) if data is not None else ""}


def check_job_shape(job, command, gid, nid):
    assert JOB_FIELDS <= set(job) <= JOB_FIELDS | {"pid", "more", "phase", "exitcode"}
    assert (job["id"], job["gid"], job["nid"], job["cmd"]) == (command["id"], gid, nid, command["cmd"])
    assert isinstance(job["data"], str) and isinstance(job["level"], int)
    assert isinstance(job["starttime"], int) and isinstance(job["time"], int)
    assert isinstance(job["streams"], list) and len(job["streams"]) == 2
    assert all(isinstance(stream, str) for stream in job["streams"])
    assert isinstance(job["critical"], str)


def test_raw_2015_session(grid):
    redis = grid.redis
    command = command_2015("execute", gid=1, nid=1, data={"who": "2015"},
                           args={"name": "bash", "args": ["-c", "read line; echo 20:::; echo \"$line\"; echo :::"]})
    redis.rpush("cmds_queue", json.dumps(command))

    _, raw = redis.blpop(f"cmds_queue_{command['id']}", timeout=30)
    job = json.loads(raw)
    check_job_shape(job, command, 1, 1)
    assert (job["state"], job["level"]) == ("SUCCESS", 20)
    assert json.loads(job["data"]) == {"who": "2015"}, "data reached stdin as the JSON the client sent"

    results = redis.hgetall(f"jobresult:{command['id']}")
    assert list(results) == [b"1:1"]
    assert json.loads(results[b"1:1"]) == job

    logged = [json.loads(entry) for entry in redis.lrange("joblog", 0, 100)]
    assert command in logged


def test_raw_2015_fanout_and_errors(grid):
    redis = grid.redis
    fanout = command_2015("ping", role="web", fanout=True)
    unknown = command_2015("execute", gid=1, nid=42, args={"name": "true"})
    redis.rpush("cmds_queue", json.dumps(fanout), json.dumps(unknown))

    jobs = [json.loads(redis.blpop(f"cmds_queue_{fanout['id']}", timeout=30)[1]) for _ in range(2)]
    assert sorted((job["gid"], job["nid"]) for job in jobs) == [(1, 1), (1, 2)]
    for job in jobs:
        check_job_shape(job, fanout, job["gid"], job["nid"])
        assert (job["state"], json.loads(job["data"])) == ("SUCCESS", "pong")
    assert set(redis.hgetall(f"jobresult:{fanout['id']}")) == {b"1:1", b"1:2"}

    error = json.loads(redis.blpop(f"cmds_queue_{unknown['id']}", timeout=30)[1])
    check_job_shape(error, unknown, 1, 42)
    assert (error["state"], error["data"]) == ("ERROR", "agent 1:42 is not alive")
