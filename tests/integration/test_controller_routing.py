"""Routing through a real controller: targets, visible decisions, clear refusals, fuzzed input.

The module's grid (``grid`` fixture): agents 1:1 (web, db), 1:2 (web), 2:1 (db), one controller.
A single controller takes ``cmds_queue`` in order, so once a command pushed last is answered,
everything pushed before it has been decided: that is the barrier these tests wait on.
"""

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TIMEOUT, command, controller_command, result, results, run, submit, wait_until

import acclient
from acgrid.launcher import AgentSpec
from protocol import keys
from protocol.command import MalformedCommand, decode_command

SLEEPER = {"name": "sleep", "args": ["30"], "max_time": 4}


def agent_of(job):
    return job["gid"], job["nid"]


def dead_letters(grid):
    return int(grid.redis.get(keys.DEAD_LETTER_COUNT) or 0)


def barrier(grid):
    """Wait until everything pushed so far has been decided."""
    assert run(grid.redis, role="*")["state"] == "SUCCESS"


# -- where commands go ----------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "expected"), [
    ({"gid": 1, "nid": 2}, {(1, 2)}),
    ({"gid": 2, "nid": 1}, {(2, 1)}),
    ({"gid": 2, "role": "db"}, {(2, 1)}),
    ({"gid": 1, "role": "db"}, {(1, 1)}),
    ({"role": "db"}, {(1, 1), (2, 1)}),
    ({"roles": ["web", "db"]}, {(1, 1)}),
    ({"gid": 1, "roles": ["db", "web"]}, {(1, 1)}),
    ({"role": "*"}, {(1, 1), (1, 2), (2, 1)}),
    ({"gid": 2, "role": "*"}, {(2, 1)}),
])
def test_one_target(grid, fields, expected):
    sent = command(**fields)
    submit(grid.redis, sent)
    job = result(grid.redis, sent["id"])
    assert job["state"] == "SUCCESS" and agent_of(job) in expected
    assert list(grid.redis.hgetall(keys.job_results(sent["id"]))) == [f"{job['gid']}:{job['nid']}".encode()]


@pytest.mark.parametrize(("fields", "expected"), [
    ({"role": "*", "fanout": True}, {(1, 1), (1, 2), (2, 1)}),
    ({"role": "db", "fanout": True}, {(1, 1), (2, 1)}),
    ({"gid": 1, "role": "*", "fanout": True}, {(1, 1), (1, 2)}),
    ({"gid": 1, "role": "db", "fanout": True}, {(1, 1)}),
    ({"roles": ["web", "db"], "fanout": True}, {(1, 1)}),
])
def test_fanout_reaches_every_live_match_once(grid, fields, expected):
    sent = command(**fields)
    submit(grid.redis, sent)
    jobs = results(grid.redis, sent["id"], len(expected))
    assert {agent_of(job) for job in jobs} == expected
    assert all(job["state"] == "SUCCESS" for job in jobs)
    barrier(grid)
    assert grid.redis.llen(keys.result_queue(sent["id"])) == 0, "one result per agent, no more"


def test_every_target_is_queued_before_any_answer(grid):
    """The first time jobresult:<id> can be read, it already names every agent the command went to."""
    sent = command(role="*", fanout=True)
    submit(grid.redis, sent)
    first_view = wait_until(lambda: grid.redis.hgetall(keys.job_results(sent["id"])), what="jobresult written")
    assert set(first_view) == {b"1:1", b"1:2", b"2:1"}
    jobs = results(grid.redis, sent["id"], 3)
    assert {job["state"] for job in jobs} == {"SUCCESS"}
    assert {json.loads(raw)["state"] for raw in grid.redis.hvals(keys.job_results(sent["id"]))} == {"SUCCESS"}


def test_queued_job_shows_the_command(grid):
    sent = command("execute", gid=1, nid=1, args={"name": "sleep", "args": ["0.2"]}, tags="mine")
    submit(grid.redis, sent)
    seen = wait_until(lambda: grid.redis.hget(keys.job_results(sent["id"]), "1:1"), what="jobresult written")
    job = json.loads(seen)
    assert job["state"] in {"RUNNING", "SUCCESS"}, "never QUEUED on the wire: the 2015 Job would freeze on it"
    assert (job["id"], job["cmd"], job["args"]["name"], job["tags"]) == (sent["id"], "execute", "sleep", "mine")
    assert result(grid.redis, sent["id"])["state"] == "SUCCESS"
    assert json.loads(grid.redis.hget(keys.job_results(sent["id"]), "1:1"))["state"] == "SUCCESS"


def test_role_goes_to_the_least_busy_agent(grid):
    busy = [command("execute", gid=1, nid=2, args=SLEEPER) for _ in range(2)]
    submit(grid.redis, *busy)
    job = run(grid.redis, gid=1, role="web")
    assert agent_of(job) == (1, 1), "1:2 has two jobs running, 1:1 none"
    for sent in busy:
        assert result(grid.redis, sent["id"])["state"] == "TIMEOUT"


def test_commands_are_logged_newest_first(grid):
    sent = [command(gid=1, nid=1) for _ in range(3)]
    submit(grid.redis, *sent)
    for item in sent:
        result(grid.redis, item["id"])
    logged = [json.loads(raw)["id"] for raw in grid.redis.lrange(keys.JOBLOG, 0, 2)]
    assert logged == [item["id"] for item in reversed(sent)]


# -- clear refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "reason"), [
    ({"gid": 1, "nid": 7}, "agent 1:7 is not alive"),
    ({"gid": 3, "nid": 1}, "agent 3:1 is not alive"),
    ({"role": "cache"}, "no live agent with role 'cache'"),
    ({"gid": 2, "role": "web"}, "no live agent with role 'web' in grid 2"),
    ({"gid": 9, "role": "*", "fanout": True}, "no agent with role '*' in grid 9"),
    ({"roles": ["web", "gpu"]}, "no live agent with roles 'web', 'gpu'"),
])
def test_no_route_is_one_error_at_once(grid, fields, reason):
    sent = command(**fields)
    submit(grid.redis, sent)
    job = result(grid.redis, sent["id"])
    assert (job["state"], job["data"], job["id"]) == ("ERROR", reason, sent["id"])
    barrier(grid)
    assert grid.redis.llen(keys.result_queue(sent["id"])) == 0
    assert grid.redis.hlen(keys.job_results(sent["id"])) == 1


BIG = 16 * 1024 * 1024

MALFORMED = [
    # (changes to a good command, the start of the ERROR job's data)
    ({"cmd": None}, "malformed command: cmd: missing"),
    ({"cmd": 12}, "malformed command: cmd: expected a string, got an integer"),
    ({"cmd": ""}, "malformed command: cmd: must be 1 to 256 characters"),
    ({"gid": "1"}, "malformed command: gid: expected a positive integer or null, got a string"),
    ({"gid": -4}, "malformed command: gid: -4 is out of range"),
    ({"nid": 1.5}, "malformed command: nid: expected a positive integer or null, got a number"),
    ({"nid": True}, "malformed command: nid: expected a positive integer or null, got a boolean"),
    ({"role": "web"}, "malformed command: nid: a command goes to one node (gid and nid) or to a role, not both"),
    ({"nid": None, "gid": None, "fanout": True}, "malformed command: fanout: fanout needs a role"),
    ({"nid": None, "fanout": True}, "malformed command: fanout: fanout needs a role"),
    ({"fanout": "yes"}, "malformed command: fanout: expected true or false, got a string"),
    ({"gid": None}, "malformed command: gid: missing: nid needs a gid"),
    ({"nid": None}, "malformed command: nid: no target"),
    ({"nid": None, "role": 5}, "malformed command: role: expected a string, got an integer"),
    ({"nid": None, "roles": "web"}, "malformed command: roles: expected a non-empty list of strings"),
    ({"nid": None, "roles": ["web", None]}, "malformed command: roles[1]: expected a string, got null"),
    ({"nid": None, "role": "web", "roles": ["web"]}, "malformed command: roles: give either role or roles"),
    ({"data": {"a": 1}}, "malformed command: data: expected a string (JSON-encode objects first)"),
    ({"data": "x" * (BIG + 1)}, f"malformed command: data: {BIG + 1} bytes exceeds the limit of {BIG}"),
    ({"args": ["ls"]}, "malformed command: args: expected an object, got a list"),
    ({"args": {"colour": "red"}}, "malformed command: args.colour: unknown run argument"),
    ({"args": {"max_time": "10"}}, "malformed command: args.max_time: expected a number, got a string"),
    ({"args": {"env": {"A": 1}}}, "malformed command: args.env.A: expected a string without NUL"),
    ({"args": {"loglevels": "1,x"}}, "malformed command: args.loglevels"),
    ({"tags": ["a"]}, "malformed command: tags: expected a string, got a list"),
    ({"cmd": "controller", "args": {"name": "reboot"}}, "unknown controller command 'reboot'"),
]


def test_malformed_commands_are_answered_with_one_error_naming_the_field(grid):
    sent = []
    for changes, _ in MALFORMED:
        item = command(gid=1, nid=1)
        item.update(changes)
        sent.append(item)
    submit(grid.redis, *sent)
    for item, (_, reason) in zip(sent, MALFORMED, strict=True):
        job = result(grid.redis, item["id"])
        assert job["state"] == "ERROR" and job["id"] == item["id"]
        assert job["data"].startswith(reason), (job["data"][:200], reason)
    barrier(grid)
    for item in sent:
        assert grid.redis.llen(keys.result_queue(item["id"])) == 0, "exactly one answer each"


UNANSWERABLE = [
    (b"hello", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe\x00", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b'{"id": "x", "cmd": "ping"', "not valid JSON"),
    (b"[1, 2]", "expected a JSON object, got a list"),
    (b"null", "expected a JSON object, got null"),
    (b'{"cmd": "ping", "role": "*"}', "id: missing"),
    (b'{"id": 7, "cmd": "ping", "role": "*"}', "id: expected a string, got an integer"),
    (b'{"id": "", "cmd": "ping", "role": "*"}', "id: must be 1 to 128 characters"),
    (json.dumps({"id": "x" * 129, "cmd": "ping"}).encode(), "id: must be 1 to 128 characters"),
    (b'{"id": "a\\nb", "cmd": "ping"}', "id: contains control characters"),
]


def test_input_without_usable_id_goes_to_dead_letters_counted_with_the_reason(grid):
    before = dead_letters(grid)
    submit(grid.redis, *(raw for raw, _ in UNANSWERABLE))
    barrier(grid)
    assert dead_letters(grid) == before + len(UNANSWERABLE)
    letters = [json.loads(raw) for raw in grid.redis.lrange(keys.DEAD_LETTERS, 0, len(UNANSWERABLE) - 1)]
    letters.reverse()  # newest first on the list
    for letter, (raw, reason) in zip(letters, UNANSWERABLE, strict=True):
        assert reason in letter["reason"], (letter["reason"], reason)
        assert letter["size"] == len(raw)
        assert letter["input"] == raw[:1000].decode("utf-8", "replace")


# -- fuzz --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
run_arg_names = st.sampled_from(["domain", "name", "args", "max_time", "max_restart", "recurring_period",
                                 "stats_interval", "loglevels", "queue", "env", "colour"])
command_like = st.fixed_dictionaries({}, optional={
    "id": st.text(min_size=1, max_size=8).map(lambda text: f"fuzz-{text}") | json_values,
    "gid": st.integers(-2, 3) | json_values,
    "nid": st.integers(-2, 3) | json_values,
    "role": st.sampled_from(["*", "web", "db", "nope"]) | json_values,
    "roles": st.lists(st.sampled_from(["*", "web", "db"]), max_size=3) | json_values,
    "fanout": st.booleans() | json_values,
    # never "execute": a fuzzer must not start arbitrary programs on the agents
    "cmd": st.sampled_from(["ping", "controller", "no_such_command"]) | st.integers() | st.none(),
    "args": st.dictionaries(run_arg_names, json_values, max_size=3) | json_values,
    "data": st.text(max_size=20) | json_values,
    "tags": st.text(max_size=5) | json_values,
})
payloads = (
    st.binary(max_size=100)
    | st.text(max_size=100).map(str.encode)
    | json_values.map(lambda value: json.dumps(value).encode())
    | command_like.map(lambda value: json.dumps(value).encode())
)


def test_fuzzed_input_never_stops_the_controller(grid):
    pushed: list[bytes] = []

    @settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(payloads)
    def push(payload):
        grid.redis.rpush(keys.CMDS_QUEUE, payload)
        pushed.append(payload)

    before = dead_letters(grid)
    push()
    barrier(grid)
    assert grid.controllers[0].poll() is None, "the controller is still running"
    assert dead_letters(grid) == before + sum(1 for raw in pushed if _unanswerable(raw))
    sent = command(role="*", fanout=True)
    submit(grid.redis, sent)
    assert {agent_of(job) for job in results(grid.redis, sent["id"], 3)} == {(1, 1), (1, 2), (2, 1)}


def _unanswerable(raw: bytes) -> bool:
    try:
        decode_command(raw)
    except MalformedCommand as exc:
        return exc.command_id is None
    return False


# -- the controller's own commands ------------------------------------------------------------


def test_list_agents(grid):
    job = controller_command(grid.redis, "list_agents")
    assert (job["state"], job["level"]) == ("SUCCESS", 20)
    agents = {(agent["gid"], agent["nid"]): agent for agent in json.loads(job["data"])}
    assert set(agents) == {(1, 1), (1, 2), (2, 1)}
    assert agents[(1, 1)]["roles"] == ["db", "web"] and agents[(1, 1)]["alive"] is True
    assert isinstance(agents[(2, 1)]["pid"], int)


def test_controller_commands_refuse_bad_requests_by_field(grid):
    ping = {"cmd": "ping", "role": "*"}
    cases = [
        ("scheduler_add", "not json", "scheduler_add: data: expected JSON"),
        ("scheduler_add", {"cron": "* * * *", "cmd": ping}, "cron: '* * * *' is not a 5-field"),
        ("scheduler_add", {"cron": "61 * * * *", "cmd": ping}, "cron: '61 * * * *': Bad minute"),
        ("scheduler_add", {"cron": "* * * * *", "cmd": {"cmd": "ping"}}, "data.cmd.nid: no target"),
        ("scheduler_add", {"cron": "* * * * *", "cmd": "ping"}, "data.cmd: expected a command object"),
        ("scheduler_add", {"cron": "* * * * *", "cmd": {}, "when": 1}, "data.when: unknown key"),
        ("scheduler_remove", {"id": "no-such-schedule"}, "data.id: no schedule 'no-such-schedule'"),
        ("scheduler_remove", {"id": 5}, "data.id: expected a schedule id"),
    ]
    for name, data, reason in cases:
        job = controller_command(grid.redis, name, data)
        assert job["state"] == "ERROR"
        assert reason in job["data"], (job["data"], reason)


def test_a_huge_command_is_answered_alone_and_the_rest_still_flows(grid):
    big = command(gid=1, nid=1, data="x" * (8 * 1024 * 1024))
    small = [command(gid=1, nid=2) for _ in range(5)]
    submit(grid.redis, big, *small)
    assert result(grid.redis, big["id"], timeout=TIMEOUT)["state"] == "SUCCESS"
    assert all(result(grid.redis, item["id"])["state"] == "SUCCESS" for item in small)


def test_the_2015_client_reaches_the_controller_commands(grid):
    """As docs/controller.md shows it."""
    client = grid.client()
    request = {"id": "nightly-ping", "cron": "0 3 * * *", "cmd": {"cmd": "ping", "role": "*", "fanout": True}}
    added = client.cmd(None, None, "controller", acclient.RunArgs(name="scheduler_add"), data=request,
                       role="*").get_next_result(TIMEOUT)
    assert added.state == "SUCCESS" and json.loads(added.data)["id"] == "nightly-ping"
    listed = client.cmd(None, None, "controller", acclient.RunArgs(name="scheduler_list"), role="*")
    assert [item["id"] for item in json.loads(listed.get_next_result(TIMEOUT).data)] == ["nightly-ping"]
    removed = client.cmd(None, None, "controller", acclient.RunArgs(name="scheduler_remove"),
                         data={"id": "nightly-ping"}, role="*").get_next_result(TIMEOUT)
    assert removed.state == "SUCCESS"


def test_one_controller_keeps_the_order_commands_were_queued_in(grid):
    """Its two lanes decide batches side by side, but commit them in the order they were claimed."""
    sent = [command(gid=1, nid=2) for _ in range(3000)]
    for start in range(0, len(sent), 500):
        submit(grid.redis, *sent[start:start + 500])
    assert result(grid.redis, sent[-1]["id"])["state"] == "SUCCESS"
    ids = {item["id"] for item in sent}
    logged = [json.loads(raw)["id"] for raw in grid.redis.lrange(keys.JOBLOG, 0, 5000)]
    assert [entry for entry in reversed(logged) if entry in ids] == [item["id"] for item in sent]
    for item in sent[:-1]:
        assert result(grid.redis, item["id"])["state"] == "SUCCESS"


def test_stray_bells_and_outboxes_do_not_stop_the_controller(grid):
    grid.redis.rpush("ac:agent:x:y:outbox", "junk")
    for channel in ("ac:agent:x:y:bell", "ac:agent:1:bell", "ac:agent:1:2:3:bell"):
        grid.redis.publish(channel, "")
    grid.redis.rpush(keys.AgentKeys(1, 2).outbox, "no header line", '{"kind": "job"}\n{}', '{"kind": "what"}\n')
    grid.redis.publish(keys.AgentKeys(1, 2).bell, "")
    barrier(grid)
    wait_until(lambda: grid.redis.llen(keys.AgentKeys(1, 2).outbox) == 0, what="the junk drained")
    assert grid.controllers[0].poll() is None
    assert run(grid.redis, gid=1, nid=2)["state"] == "SUCCESS"
    grid.redis.delete("ac:agent:x:y:outbox")


def test_list_agents_reports_health(make_grid):
    grid = make_grid([AgentSpec(1, 1, ("web",))], controller_config={"agents": {"sweep_interval": 0.2}})
    before = time.time()
    client = grid.client()
    sleeper = client.execute(1, 1, "sleep", ["60"])

    def holding_the_job():
        agents = json.loads(controller_command(grid.redis, "list_agents")["data"])
        return agents if agents[0]["jobs"] == 1 else None

    agent, = wait_until(holding_the_job, what="the heartbeat counting the job")
    assert (agent["version"], agent["running"], agent["alive"]) == ("0.1.0", 1, True)
    assert agent["started"] <= before and 0 <= agent["uptime"] <= time.time() - agent["started"] + 1
    assert before * 1000 - 2000 <= agent["last_heartbeat"] <= time.time() * 1000 + 1000
    sleeper.kill()

    # Agents that write nonsense into their heartbeat keys confuse nobody.
    for name, write in (("5:5", lambda key: grid.redis.hset(key, "not", "a string")),
                        ("6:6", lambda key: grid.redis.set(key, "not json", px=60_000))):
        grid.redis.hset(keys.AGENTS, name, json.dumps({"roles": ["odd"]}))
        write(keys.AgentKeys(*map(int, name.split(":"))).alive)

    def listed_all():
        listed = json.loads(controller_command(grid.redis, "list_agents")["data"])
        return {f"{a['gid']}:{a['nid']}": a for a in listed} if len(listed) == 3 else None

    agents = wait_until(listed_all, what="the odd agents listed")
    assert agents["5:5"]["alive"] and agents["5:5"]["last_heartbeat"] is None and agents["6:6"]["jobs"] is None
    assert run(grid.redis, "ping", gid=1, nid=1)["state"] == "SUCCESS"

    grid.stop_agent("1:1", kill=True)
    agent, = wait_until(lambda: [a for a in json.loads(controller_command(grid.redis, "list_agents")["data"])
                                 if a["nid"] == 1 and not a["alive"]], what="the agent lost")
    assert agent["uptime"] is None and agent["last_heartbeat"] is not None, "the last heartbeat seen is kept"
