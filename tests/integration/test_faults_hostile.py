"""Faults a hostile node or client injects, each with its own credential: forged log messages, roles it was not
granted, oversized or endless outbox envelopes, bells in a loop, its own keys made strings, input built to make
error answers huge. Counted: forgeries delivered, commands routed to the wrong agent or twice, envelopes discarded,
script calls and log lines, answer sizes, processes alive."""

import json
import re
import subprocess
import sys
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import TIMEOUT, command, result, scrape, start_agent, submit, value, wait_state, wait_until

from acgrid.launcher import AgentSpec, Grid
from controller import acl
from protocol import keys
from protocol.acl import agent_user
from protocol.job import now_ms

LOGGING = {"db": {"type": "DB", "log_dir": "logs"}, "ac": {"type": "AC", "levels": "3-9", "flush_int": 0.2}}
#: Metrics on any free port; outboxes bounded low enough for a test to overrun.
CONTROLLER = {"metrics": {"listen": "127.0.0.1:0"}, "agents": {"outbox_max": 50}}
#: The agents with a Redis user of their own, and the roles each is granted.
GRANTED = {(1, 1): ["web"], (2, 1): ["db"], (1, 3): ["web"]}


class Hostile:
    """A grid whose agents 1:1 (web), 2:1 (db) and 1:3 (web, the compromised node) each have their own Redis
    user and granted roles; 1:2 (cache) has neither (the default user, roles as it declares them)."""

    def __init__(self, grid: Grid, passwords: dict[tuple[int, int], str]) -> None:
        self.grid = grid
        self.passwords = passwords

    def spec(self, gid: int, nid: int, roles: list[str]) -> AgentSpec:
        security = {"username": agent_user(gid, nid), "password": self.passwords[(gid, nid)]}
        return AgentSpec(gid, nid, tuple(roles), {"controllers": {"main": {"security": security}},
                                                  "logging": LOGGING})

    def as_agent(self, gid: int, nid: int) -> redis.Redis:
        """What a node's own credential lets one do on the bus."""
        return redis.Redis(port=self.grid.address.port, username=agent_user(gid, nid),
                           password=self.passwords[(gid, nid)], retry=Retry(NoBackoff(), 0), socket_timeout=30)

    def inject(self, gid: int, nid: int, *envelopes: str | bytes) -> None:
        """Write envelopes to agent gid:nid's outbox with its credential, and ring its bell."""
        attacker = self.as_agent(gid, nid)
        try:
            attacker.rpush(keys.AgentKeys(gid, nid).outbox, *envelopes)
            attacker.publish(keys.AgentKeys(gid, nid).bell, "")
        finally:
            attacker.close()

    def log(self) -> str:
        return self.grid.log_path("controller-0").read_text(errors="replace")

    def metrics(self) -> dict:
        address = re.search(r"metrics on http://(\S+)/metrics", self.log()).group(1)
        return scrape(address)


@pytest.fixture(scope="module")
def hostile():
    with Grid([AgentSpec(1, 2, ("cache",))], heartbeat_interval=0.3, controller_config=CONTROLLER) as grid:
        passwords = {agent: acl.add_agent(grid.redis, *agent, roles=roles) for agent, roles in GRANTED.items()}
        setup = Hostile(grid, passwords)
        grid.start_agents([setup.spec(gid, nid, roles) for (gid, nid), roles in GRANTED.items()])
        yield setup


def message(job_id: str, data: str, *, gid: int = 1, nid: int = 1, message_id: int = 999) -> str:
    return json.dumps({"id": message_id, "jobid": job_id, "domain": "", "name": "", "epoch": int(time.time()),
                       "level": 4, "data": data, "gid": gid, "nid": nid})


def log_envelope(*lines: str) -> str:
    return '{"kind":"log"}\n' + "\n".join(lines)


def logged(grid: Grid, gid: int, nid: int) -> list[dict]:
    return [json.loads(raw) for raw in grid.redis.lrange(keys.agent_logs(gid, nid), 0, -1)]


def collect(pubsub) -> list[dict]:
    """Every message published so far on a subscription (a PING answers after all of them)."""
    pubsub.ping("end")
    found = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        event = pubsub.get_message(timeout=1)
        if event is None:
            continue
        if event["type"] == "pong":
            return found
        found.append(json.loads(event["data"]))
    raise AssertionError("the subscription did not answer its PING")


# -- B: forged log messages ------------------------------------------------------------------------------------------

def test_log_messages_forged_for_another_agents_job_reach_nobody(hostile):
    grid = hostile.grid
    client, follower_client = grid.client(), grid.client()
    victim_id = f"victim-{now_ms()}"
    with grid.redis.pubsub(ignore_subscribe_messages=True) as channel:
        channel.subscribe(keys.job_messages(victim_id))
        victim = follower_client.execute(1, 1, "bash", ["-c", "echo 4::real; sleep 5; echo 20::done"], id=victim_id)
        followed: list[dict] = []
        follower = threading.Thread(target=lambda: followed.extend(victim.follow_msgs(timeout=TIMEOUT, history=True)),
                                    daemon=True)
        follower.start()
        wait_until(lambda: any(item["data"] == "real" for item in followed), what="the follower hearing the job")

        dropped_before = hostile.log().count("log messages from agent 1:3")
        forged = [message(victim_id, f"forged {index}") for index in range(3)]
        forged.append(message("no-such-job", "forged for nothing"))
        forged.append("not json at all")
        hostile.inject(1, 3, log_envelope(*forged))  # with 1:3's own credential
        wait_until(lambda: hostile.log().count("log messages from agent 1:3") > dropped_before,
                   what="the controller saying it dropped them")

        assert client.get_cmd_jobs(victim_id)[(1, 1)].state == "RUNNING", "the forgeries came while the job ran"
        follower.join(TIMEOUT)
        assert not follower.is_alive(), "follow_msgs ends with the job"
        published = collect(channel)
    assert victim.get_next_result(TIMEOUT).data == "done"
    stored = logged(grid, 1, 1) + logged(grid, 1, 3)
    counts = {"follower": sum("forged" in item["data"] for item in followed),
              "channel": sum("forged" in item["data"] for item in published),
              "ac:ctl:logs": sum("forged" in item["data"] for item in stored)}
    dropped_metric = value(hostile.metrics(), "ac_controller_messages_dropped_total")
    print(f"5 forged log messages from 1:3 (3 for 1:1's job): delivered {counts}; "
          f"ac_controller_messages_dropped_total {dropped_metric:g}")
    assert counts == {"follower": 0, "channel": 0, "ac:ctl:logs": 0}
    assert "dropped 5 log messages from agent 1:3" in hostile.log()
    assert [item["data"] for item in followed] == ["real"], "the genuine message arrives"
    assert any(item["data"] == "real" and item["jobid"] == victim_id for item in logged(grid, 1, 1))
    assert dropped_metric >= 5


def test_a_log_message_for_an_agents_own_job_is_stamped_with_its_own_identity(hostile):
    grid = hostile.grid
    client = grid.client()
    own = client.execute(1, 3, "sleep", ["30"])
    wait_state(client, own.id, "RUNNING", (1, 3))
    with grid.redis.pubsub(ignore_subscribe_messages=True) as channel:
        channel.subscribe(keys.job_messages(own.id))
        hostile.inject(1, 3, log_envelope(message(own.id, "claims to be 1:1", gid=1, nid=1)))
        event = None
        deadline = time.monotonic() + TIMEOUT
        while event is None:
            assert time.monotonic() < deadline, "the message never reached the job's channel"
            event = channel.get_message(timeout=1)
    arrived = json.loads(event["data"])
    stored = [item for item in logged(grid, 1, 3) if item["data"] == "claims to be 1:1"]
    print(f"a message of 1:3 claiming gid 1 nid 1 arrived as {arrived['gid']}:{arrived['nid']} on the channel, "
          f"{[(item['gid'], item['nid']) for item in stored]} in ac:ctl:logs:1:3")
    assert (arrived["gid"], arrived["nid"], arrived["data"]) == (1, 3, "claims to be 1:1")
    assert [(item["gid"], item["nid"]) for item in stored] == [(1, 3)]
    assert not [item for item in logged(grid, 1, 1) if item["data"] == "claims to be 1:1"]
    own.kill()
    assert own.get_next_result(TIMEOUT).state == "KILLED"


# -- C: roles are granted, not claimed ------------------------------------------------------------------------------

REFUSED = "refused the registration of agent 1:3: it claims roles it was not granted (db)"


def registered_roles(grid: Grid, gid: int, nid: int) -> list[str]:
    return json.loads(grid.redis.hget(keys.AGENTS, keys.agent_name(gid, nid)))["roles"]


def test_an_agent_cannot_claim_roles_it_was_not_granted(hostile):
    grid = hostile.grid
    client = grid.client()
    assert json.loads(grid.redis.hget(keys.GRANTED_ROLES, "1:3")) == ["web"], "granted web (acl add-agent --roles)"
    grid.stop_agent("1:3")
    refusals = hostile.log().count(REFUSED)
    start_agent(grid, hostile.spec(1, 3, ["web", "db"]))  # its agent2.toml claims db as well
    wait_until(lambda: hostile.log().count(REFUSED) > refusals, what="the registration refused")
    assert registered_roles(grid, 1, 3) == ["web"]

    sent = [client.cmd(None, None, "ping", None, role="db") for _ in range(10)]
    where = [(job.gid, job.nid) for job in (cmd.get_next_result(TIMEOUT) for cmd in sent)]
    print(f"10 role-db commands after 1:3 claimed db: {where.count((2, 1))} to 2:1 (granted db), "
          f"{where.count((1, 3))} to 1:3")
    assert where == [(2, 1)] * 10

    registration = {"gid": 1, "nid": 3, "roles": ["db"], "hostname": "forged", "version": "0.1.0", "pid": 1,
                    "started": int(time.time()), "max_jobs": 100, "heartbeat_interval": 0.3, "metrics": None}
    refused_before = hostile.log().count("refused the registration of agent 1:3")
    hostile.inject(1, 3, '{"kind":"register"}\n' + json.dumps(registration))
    wait_until(lambda: hostile.log().count("refused the registration of agent 1:3") > refused_before,
               what="the forged registration refused")
    assert registered_roles(grid, 1, 3) == ["web"]
    refused_metric = value(hostile.metrics(), "ac_controller_registrations_refused_total")
    print(f"registrations refused (agent config, raw envelope): ac_controller_registrations_refused_total "
          f"{refused_metric:g}")
    assert refused_metric >= 2
    assert client.cmd(None, None, "ping", None, role="db").get_next_result(TIMEOUT).nid == 1, "still 2:1 only"

    grid.stop_agent("1:3")
    grid.start_agents([hostile.spec(1, 3, ["web"])])  # waits for its registration to be taken
    answers = client.cmd(None, None, "ping", None, role="web", fanout=True).iter_results(timeout=TIMEOUT)
    assert sorted((job.gid, job.nid) for job in answers) == [(1, 1), (1, 3)]

    # Without a grant (agent 1:2, no Redis user of its own), the roles an agent declares are taken as they are.
    assert client.cmd(None, None, "ping", None, role="cache").get_next_result(TIMEOUT).nid == 2


# -- G: error answers do not echo unbounded input --------------------------------------------------------------------

def test_error_answers_do_not_echo_unbounded_input(hostile):
    bus = hostile.grid.redis
    cases = {
        "execute of a 10 MB name": (command("execute", gid=1, nid=1, args={"name": "x" * 10_000_000}),
                                    "not found on PATH"),
        "get_msgs with a 1 MB key": (command("get_msgs", gid=1, nid=1, data=json.dumps({"x" * 1_000_000: 1})), ""),
        "kill of a 1 MB job id": (command("kill", gid=1, nid=1, data=json.dumps({"id": "x" * 1_000_000})), ""),
        "max_time a 1 MB string": (command("execute", gid=1, nid=1, args={"name": "true", "max_time": "x" * 1_000_000}),
                                   "malformed command: args.max_time"),
    }
    for what, (sent, says) in cases.items():
        raw = json.dumps(sent)
        assert len(raw) < 16 * 1024 * 1024
        submit(bus, raw)
        answer = result(bus, sent["id"], timeout=60)
        print(f"{what}: command {len(raw)} bytes -> {answer['state']}, data {len(answer['data'])} characters "
              f"({answer['data'][:70]!r}...), whole answer {len(json.dumps(answer))} bytes")
        assert answer["state"] == "ERROR", (what, answer["data"][:200])
        assert len(answer["data"]) < 1000, what
        assert len(json.dumps(answer)) < 10_000, f"{what}: the whole answer stays small (its args echo too)"
        assert says in answer["data"], (what, answer["data"][:200])
    assert hostile.grid.controllers[0].poll() is None and hostile.grid.agents["1:1"].poll() is None


# -- H: oversized and endless outboxes ---------------------------------------------------------------------------------

def test_an_agent_cannot_make_the_controller_take_oversized_input(hostile):
    grid = hostile.grid
    client = grid.client()
    outbox = keys.AgentKeys(1, 3).outbox
    discarded_before = value(hostile.metrics(), "ac_controller_envelopes_discarded_total")
    lines_before = hostile.log().count("discarded 1 envelopes of agent 1:3")
    hostile.inject(1, 3, '{"kind":"stats","id":"x"}\n' + "x" * 40_000_000)  # 40 MB; the limit is 32 MiB
    wait_until(lambda: hostile.log().count("discarded 1 envelopes of agent 1:3") > lines_before,
               what="the 40 MB envelope discarded")
    discarded = value(hostile.metrics(), "ac_controller_envelopes_discarded_total") - discarded_before
    print(f"a 40 MB envelope from 1:3: {discarded:g} discarded; outbox now {grid.redis.llen(outbox)} envelopes")
    assert discarded >= 1
    assert grid.controllers[0].poll() is None
    assert client.cmd(1, 1, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"
    assert grid.redis.llen(outbox) == 0

    dropped_before = value(hostile.metrics(), "ac_controller_results_dropped_total")
    lines_before = hostile.log().count("(unknown envelope kind nonsense)")
    hostile.inject(1, 3, *['{"kind":"nonsense"}\nx'] * 200)  # the outbox may hold 50 (outbox_max)
    wait_until(lambda: "discarded 150 envelopes of agent 1:3" in hostile.log(), what="the outbox cut to 50")
    wait_until(lambda: value(hostile.metrics(), "ac_controller_results_dropped_total") - dropped_before == 50,
               what="the 50 kept drained and dropped")
    left, lines = grid.redis.llen(outbox), hostile.log().count("(unknown envelope kind nonsense)") - lines_before
    print(f"200 junk envelopes from 1:3 with outbox_max 50: 150 discarded, 50 drained and dropped (said in {lines} "
          f"log lines), {left} left in the outbox")
    assert left == 0
    assert 1 <= lines <= 2, "one line per drain, not one per envelope"
    assert grid.controllers[0].poll() is None
    assert all(process.poll() is None for process in grid.agents.values())
    for agent in ((1, 1), (1, 3)):
        assert client.cmd(*agent, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"


# -- I: bells rung in a loop ------------------------------------------------------------------------------------------

#: A node's credential used to ring its outbox and tunnel bells as fast as redis-py can, until killed.
BELL_FLOOD = """
import sys, redis
port, user, password, bell, tunnel_up = sys.argv[1:]
bus = redis.Redis(port=int(port), username=user, password=password)
while True:
    with bus.pipeline(transaction=False) as pipe:
        for _ in range(500):
            pipe.publish(bell, "")
            pipe.publish(tunnel_up, "requests")
        pipe.execute()
"""


def calls(bus: redis.Redis, command_name: str) -> int:
    return bus.info("commandstats").get(f"cmdstat_{command_name}", {}).get("calls", 0)


def test_a_node_ringing_its_bells_in_a_loop_is_paced_and_holds_up_no_one(hostile):
    """Before: every bell made the controller drain that outbox (or read that request list) once more, back to
    back: a node's own credential made the controller and Redis spin, and put 70 ms (p50) to a second (p99) on
    every other agent's pings. Now each bell costs the controller little more than parsing it, and a node that
    rings for nothing is read at most every IDLE_REST_CAP seconds; its own results still come."""
    grid, agent = hostile.grid, keys.AgentKeys(1, 3)
    client = grid.client()
    warnings = ("agent 1:3 rings its bell again and again", "agent 1:3 rings its tunnel bell again and again")
    floods_before = value(hostile.metrics(), "ac_controller_bell_floods_total")
    logged_before = [hostile.log().count(warning) for warning in warnings]
    attacker = subprocess.Popen([sys.executable, "-c", BELL_FLOOD, str(grid.address.port), agent_user(1, 3),
                                 hostile.passwords[(1, 3)], agent.bell, agent.tunnel_up])
    try:
        wait_until(lambda: all(hostile.log().count(warning) > before
                               for warning, before in zip(warnings, logged_before, strict=True)),
                   what="both floods paced, and logged")
        scripts_before, pops_before, published_before = (calls(grid.redis, "evalsha"), calls(grid.redis, "lpop"),
                                                          calls(grid.redis, "publish"))
        time.sleep(1.0)  # a window of flood with nothing else asked: what does it cost?
        scripts, pops = calls(grid.redis, "evalsha") - scripts_before, calls(grid.redis, "lpop") - pops_before
        bells = calls(grid.redis, "publish") - published_before
        honest = [client.cmd(1, 1, "ping", None).get_next_result(TIMEOUT).state for _ in range(100)]
        own = client.cmd(1, 3, "ping", None).get_next_result(TIMEOUT).state
        assert attacker.poll() is None, "the flood went on all along"
    finally:
        attacker.kill()
        attacker.wait()
    print(f"one node's credential ringing {bells} bells in a second: {scripts} script calls, {pops} LPOPs on the bus "
          f"in that second; 100 pings of another agent and one of its own answered meanwhile")
    assert bells > 10_000
    assert scripts < 100 and pops < 200, "each paced: a drain or a read every 0.1 s, not one per bell"
    assert honest == ["SUCCESS"] * 100 and own == "SUCCESS"
    assert value(hostile.metrics(), "ac_controller_bell_floods_total") >= floods_before + 2
    assert grid.controllers[0].poll() is None and all(process.poll() is None for process in grid.agents.values())
    assert client.cmd(1, 3, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"


#: A node's credential filling its own outbox with junk job envelopes (and ringing), until killed.
OUTBOX_FLOOD = """
import sys, redis
port, user, password, outbox, bell = sys.argv[1:]
bus = redis.Redis(port=int(port), username=user, password=password)
while True:
    with bus.pipeline(transaction=False) as pipe:
        pipe.rpush(outbox, *['{"kind":"job"}\\n{}'] * 500)
        pipe.publish(bell, "")
        pipe.execute()
"""


def test_a_node_filling_its_outbox_with_junk_in_a_loop_does_not_flood_the_log(hostile):
    """Before: a line in the controller's log per junk envelope, 11 MB of log a second from one node. Now one
    line per drain and kind, at most 5 per agent and kind in 10 s (``acdaemon.logs.LogBudget``); the counters
    count every envelope."""
    grid, agent = hostile.grid, keys.AgentKeys(1, 3)
    client = grid.client()
    dropped_before = value(hostile.metrics(), "ac_controller_results_dropped_total")
    attacker = subprocess.Popen([sys.executable, "-c", OUTBOX_FLOOD, str(grid.address.port), agent_user(1, 3),
                                 hostile.passwords[(1, 3)], agent.outbox, agent.bell])
    try:
        wait_until(lambda: value(hostile.metrics(), "ac_controller_results_dropped_total") > dropped_before + 10_000,
                   what="the junk drained and dropped")
        lines_before = len(hostile.log().splitlines())
        pushed_before = calls(grid.redis, "rpush")
        time.sleep(1.0)  # a window of flood: what does it write to the log?
        lines, pushes = len(hostile.log().splitlines()) - lines_before, calls(grid.redis, "rpush") - pushed_before
        honest = [client.cmd(1, 1, "ping", None).get_next_result(TIMEOUT).state for _ in range(50)]
        assert attacker.poll() is None, "the flood went on all along"
    finally:
        attacker.kill()
        attacker.wait()
    dropped = value(hostile.metrics(), "ac_controller_results_dropped_total") - dropped_before
    print(f"one node pushing {pushes * 500} junk envelopes in a second: {lines} lines of controller log in that "
          f"second; {dropped:g} dropped and counted in all")
    assert pushes * 500 > 10_000
    assert lines <= 12, "within the log's budget: 5 lines per agent and kind in 10 s"
    assert honest == ["SUCCESS"] * 50
    assert grid.controllers[0].poll() is None and all(process.poll() is None for process in grid.agents.values())
    assert client.cmd(1, 3, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"


def test_a_node_that_makes_its_command_queue_no_list_holds_up_no_ones_commands(hostile):
    """An agent may write its own command queue; made a string, the controller's ``RPUSH`` there failed inside
    ``route.lua``, after the writes before it (Redis does not undo them): the batch was retried again and again,
    each time sending its other commands once more (a fanout answered 8 times by 1:1 in 15 s), and routing stopped
    for every agent. Now the queue is replaced and the batch goes through once."""
    grid, agent = hostile.grid, keys.AgentKeys(1, 3)
    client = grid.client()
    attacker = hostile.as_agent(1, 3)
    try:
        attacker.delete(agent.commands)
        attacker.set(agent.commands, "not a list")
    finally:
        attacker.close()
    own, other = client.cmd(1, 3, "ping", None), client.cmd(1, 1, "ping", None)
    fanout = client.cmd(1, None, "ping", None, role="web", fanout=True)
    answers = {"1:3": own.get_next_result(TIMEOUT).state, "1:1": other.get_next_result(TIMEOUT).state}
    fanned = sorted((job.gid, job.nid, job.state) for job in fanout.iter_results(timeout=TIMEOUT))
    later = [client.cmd(1, 1, "ping", None).get_next_result(TIMEOUT).state for _ in range(20)]
    extra = [cmd.noblock_get_next_result() for cmd in (own, other, fanout)]
    print(f"after 1:3 made its command queue a string: {answers}, fanout {fanned}, 20 later pings {set(later)}")
    assert answers == {"1:3": "SUCCESS", "1:1": "SUCCESS"}
    assert fanned == [(1, 1, "SUCCESS"), (1, 3, "SUCCESS")], "one answer per target, none repeated"
    assert later == ["SUCCESS"] * 20 and extra == [None, None, None]
    assert f"replaced {agent.commands}: it held another type" in hostile.log()
    assert grid.controllers[0].poll() is None and all(process.poll() is None for process in grid.agents.values())


#: A node's credential making its outbox and its tunnel request list strings, ringing both bells, until killed.
WRONG_TYPE_FLOOD = """
import sys, redis
port, user, password, outbox, bell, requests, tunnel_up = sys.argv[1:]
bus = redis.Redis(port=int(port), username=user, password=password)
while True:
    with bus.pipeline(transaction=False) as pipe:
        for _ in range(50):
            pipe.delete(outbox, requests).set(outbox, "x").set(requests, "x")
            pipe.publish(bell, "").publish(tunnel_up, "requests")
        pipe.execute()
"""


def test_a_node_that_makes_its_outbox_and_request_list_no_lists_is_paced_and_logged_within_budget(hostile):
    """Before: a drain of an outbox that is no list failed in Redis, was logged every time and never paced (a
    node ringing in a loop had its drains back to back, a line each); a request list that is no list failed the
    whole pipeline of ``LPOP`` (the other agents' requests popped with it were lost). Now the outbox is deleted
    (counted as discarded), both are paced as empty ones are, and each failure is said within the log's budget."""
    grid, agent = hostile.grid, keys.AgentKeys(1, 3)
    client = grid.client()
    published_at_start = calls(grid.redis, "publish")
    attacker = subprocess.Popen([sys.executable, "-c", WRONG_TYPE_FLOOD, str(grid.address.port), agent_user(1, 3),
                                 hostile.passwords[(1, 3)], agent.outbox, agent.bell, agent.tunnel_requests,
                                 agent.tunnel_up])
    try:
        wait_until(lambda: calls(grid.redis, "publish") > published_at_start + 5_000, what="the flood under way")
        lines_before, scripts_before = len(hostile.log().splitlines()), calls(grid.redis, "evalsha")
        published_before = calls(grid.redis, "publish")
        time.sleep(1.0)  # a window of the fault: what does it cost?
        lines = len(hostile.log().splitlines()) - lines_before
        scripts, bells = calls(grid.redis, "evalsha") - scripts_before, calls(grid.redis, "publish") - published_before
        honest = [client.cmd(1, 1, "ping", None).get_next_result(TIMEOUT).state for _ in range(50)]
        assert attacker.poll() is None, "the flood went on all along"
    finally:
        attacker.kill()
        attacker.wait()
    print(f"one node breaking its outbox and request list and ringing {bells} bells in a second: {scripts} script "
          f"calls, {lines} lines of controller log")
    assert bells > 5_000
    assert scripts < 100, "paced: a drain every 0.1 s, not one per bell"
    assert lines <= 12, "within the log's budget"
    assert "taking the tunnel requests of agent 1:3 failed" in hostile.log()
    assert honest == ["SUCCESS"] * 50
    assert grid.controllers[0].poll() is None and all(process.poll() is None for process in grid.agents.values())
    attacker_bus = hostile.as_agent(1, 3)
    attacker_bus.delete(agent.outbox, agent.tunnel_requests)
    attacker_bus.close()
    assert client.cmd(1, 3, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"


def test_a_client_that_makes_its_commands_results_no_hash_holds_up_no_one(hostile):
    """A client's user may push to ``jobresult:*`` (it reads results there): pushed to before its command is
    routed, the key is a list, and ``route.lua``'s ``HSET`` of the placeholder failed after the batch's earlier
    writes: the lane retried that batch again and again, and the commands claimed with it waited (10 s, then
    routed by the other lane; two such commands stop both). Now the key is replaced and the batch goes through."""
    grid = hostile.grid
    user, password = acl.add_client(grid.redis, "mallory")
    mallory = redis.Redis(port=grid.address.port, username=user, password=password, retry=Retry(NoBackoff(), 0))
    poisoned_ids = [f"poison-{index}-{now_ms()}" for index in range(2)]
    try:
        for poisoned_id in poisoned_ids:  # one for each lane
            assert mallory.rpush(keys.job_results(poisoned_id), "not a hash") == 1
    finally:
        mallory.close()
    client = grid.client()
    started = time.monotonic()
    poisoned = [client.cmd(1, 1, "ping", None, id=poisoned_id) for poisoned_id in poisoned_ids]
    other = client.cmd(1, 2, "ping", None)
    answers = [cmd.get_next_result(TIMEOUT).state for cmd in (*poisoned, other)]
    took = time.monotonic() - started
    later = [client.cmd(1, 2, "ping", None).get_next_result(TIMEOUT).state for _ in range(20)]
    extra = [cmd.noblock_get_next_result() for cmd in (*poisoned, other)]
    print(f"two commands whose jobresult keys a client made lists, and another: {answers} in {took:.2f} s")
    assert answers == ["SUCCESS"] * 3 and later == ["SUCCESS"] * 20 and extra == [None] * 3
    assert took < 5, "routed at once, not after retries"
    assert all(f"replaced {keys.job_results(poisoned_id)}: it held another type" in hostile.log()
               for poisoned_id in poisoned_ids)
    assert grid.controllers[0].poll() is None and all(process.poll() is None for process in grid.agents.values())


def test_a_client_pushing_to_the_keys_it_reads_while_they_do_not_exist_stops_no_controller(make_grid):
    """A client's user may push to the bus epoch and to the key that says a controller is alive (it reads
    both). Pushed to while they do not exist (a fresh bus, no controller up yet), they are lists, and a
    controller starting then died at once (``WRONGTYPE`` from its first sweep, or from its first heartbeat's
    ``SET ... GET``), and every client's ``cmd`` meanwhile raised ``WRONGTYPE`` for a command it had queued. Now
    each key is replaced, with a line naming it, and a command sent meanwhile is queued once and answered."""
    grid = make_grid([AgentSpec(1, 1)], acl=True)
    grid.stop_controller(0)
    grid.redis.delete(keys.BUS_EPOCH, keys.CONTROLLER_ALIVE)
    user, password = grid.client_user()
    mallory = redis.Redis(port=grid.address.port, username=user, password=password, retry=Retry(NoBackoff(), 0))
    try:
        assert mallory.rpush(keys.BUS_EPOCH, "not a token") == 1
        assert mallory.rpush(keys.CONTROLLER_ALIVE, "not a heartbeat") == 1
    finally:
        mallory.close()
    client = grid.client()
    meanwhile = client.cmd(1, 1, "ping", None)
    assert grid.redis.llen(keys.CMDS_QUEUE) == 1
    grid.start_controller(0)
    assert meanwhile.get_next_result(TIMEOUT).state == "SUCCESS"
    assert client.cmd(1, 1, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"
    log = grid.log_path("controller-0").read_text()
    assert f"replaced {keys.BUS_EPOCH}: it held another type" in log
    assert f"replaced {keys.CONTROLLER_ALIVE}" in log
    assert grid.redis.type(keys.BUS_EPOCH) == b"string" and grid.redis.type(keys.CONTROLLER_ALIVE) == b"string"
    assert grid.controllers[0].poll() is None
