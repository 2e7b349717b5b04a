"""Faults injected into the bus itself: Redis out of memory, Redis busy running a script, a result list nobody
reads, commands left in a controller's lane when its connections break, Redis restarted from its append-only
file. Counted: results lost, duplicated or wrongly answered as lost, processes alive, seconds until everything
is answered."""

import json
import re
import signal
import threading
import time

import pytest
import redis
from support import TIMEOUT, command, run, says_result_dropped, scrape, value, wait_state, wait_until

import acclient
from acgrid.launcher import AgentSpec
from protocol import keys
from protocol.job import now_ms

HEARTBEAT = 0.5
METRICS = {"metrics": {"listen": "127.0.0.1:0"}}  # any free port
FAST = {"agents": {"sweep_interval": 0.1}, "routing": {"takeover_after": 1.0}}


def controller_log(grid, index: int = 0) -> str:
    return grid.log_path(f"controller-{index}").read_text(errors="replace")


def controller_metrics(grid) -> str:
    """Where controller 0 serves its metrics (it logs the address it chose)."""
    return re.search(r"metrics on http://(\S+)/metrics", controller_log(grid)).group(1)


def dead_processes(grid) -> list[str]:
    """The grid's agents and controllers that are no longer running."""
    dead = [name for name, process in grid.agents.items() if process.poll() is not None]
    dead += [f"controller-{index}" for index, process in enumerate(grid.controllers)
             if process is None or process.poll() is not None]
    return dead


def fresh_bus(grid) -> redis.Redis:
    """A client of the grid's bus made now (those made before a Redis restart hold dead connections)."""
    return redis.Redis(**grid.address.redis_kwargs())


# -- A: Redis out of memory ------------------------------------------------------------------------------------------

OOM_SECONDS = 10.0


def test_redis_out_of_memory_is_weather(make_grid):
    grid = make_grid([AgentSpec(1, 1, ("web",), config=METRICS), AgentSpec(1, 2, ("web",))],
                     heartbeat_interval=HEARTBEAT, controller_config=METRICS)
    client, bus = grid.client(), grid.redis
    agent_metrics = {(agent["gid"], agent["nid"]): agent["metrics"] for agent in client.list_agents()}
    # Clients cannot push commands while Redis is full either: everything is submitted before.
    jobs = {
        "during": (client.execute(1, 1, "bash", ["-c", "sleep 4; echo 20::during"]), (1, 1)),
        "done": (client.execute(1, 1, "bash", ["-c", "sleep 12; echo 20::done"]), (1, 1)),
        "other": (client.execute(1, 2, "bash", ["-c", "sleep 7; echo 20::other"]), (1, 2)),
    }
    for cmd, agent in jobs.values():
        wait_state(client, cmd.id, "RUNNING", agent)
    heartbeats = [keys.AgentKeys(1, 1).alive, keys.AgentKeys(1, 2).alive]

    bus.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            bus.rpush("ac-test-probe", "x")
        samples, missing = 0, {key: 0 for key in heartbeats}
        window_ends = time.monotonic() + OOM_SECONDS
        while time.monotonic() < window_ends:  # the fault lasting is the scenario: sampled meanwhile
            probe = bus.pipeline(transaction=False)  # MULTI is refused too
            for key in heartbeats:
                probe.exists(key)
            for key, present in zip(heartbeats, probe.execute(), strict=True):
                missing[key] += not present
            samples += 1
            time.sleep(0.1)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            bus.rpush("ac-test-probe", "x")  # still full at the end of the window
    finally:
        bus.config_set("maxmemory", 0)
    print(f"OOM window {OOM_SECONDS:g} s: heartbeat keys missing in {sum(missing.values())} of "
          f"{samples * len(heartbeats)} samples")

    first = {name: cmd.get_next_result(TIMEOUT) for name, (cmd, _) in jobs.items()}
    got = {name: (job.state, job.data) for name, job in first.items()}
    print(f"answers after the OOM window: {got}")
    assert got == {"during": ("SUCCESS", "during"), "done": ("SUCCESS", "done"), "other": ("SUCCESS", "other")}, \
        "each job answered SUCCESS, none lost"
    for agent in ((1, 1), (1, 2)):  # every agent answers afterwards (and its outbox is drained up to here)
        assert client.cmd(*agent, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"
    extra = {name: cmd.noblock_get_next_result() for name, (cmd, _) in jobs.items()}
    assert extra == dict.fromkeys(jobs), "each job answered exactly once"
    assert missing == {key: 0 for key in heartbeats}, "heartbeats kept their expiry while Redis was full"
    assert "lost: no heartbeat" not in controller_log(grid)
    assert dead_processes(grid) == []

    agent_refusals = value(scrape(agent_metrics[(1, 1)]), "ac_agent_bus_refusals_total", controller="main",
                           kind="OOM")
    controller_refusals = value(scrape(controller_metrics(grid)), "ac_controller_bus_refusals_total", kind="OOM")
    refusal_lines = controller_log(grid).count("refuses")
    print(f"OOM refusals counted: agent 1:1 {agent_refusals:g}, controller {controller_refusals:g}; controller log "
          f"lines about them: {refusal_lines}")
    assert agent_refusals > 0
    assert controller_refusals > 0
    assert refusal_lines <= 10, "refusals are logged once in a while, not once each"


# -- A2: Redis busy running a long script ----------------------------------------------------------------------------

BUSY_THRESHOLD_MS = 100  # Redis answers BUSY once a script has run this long


def test_an_outbox_the_bus_refused_to_drain_is_drained_once_it_is_free(make_grid, tmp_path):
    """An agent rings its bell once per outbox write. A drain the bus refuses (``BUSY``: someone's long
    script) must be tried again: the agent will not ring again for a job that is over, so its result would wait
    in the outbox forever. Made certain: the controller is paused (SIGSTOP) while the agent writes the result
    and rings, and resumed while Redis is busy, so the one drain it makes for that bell meets ``BUSY``."""
    grid = make_grid([AgentSpec(1, 1)], heartbeat_interval=2.0)
    client, bus = grid.client(), grid.redis
    go = tmp_path / "go"
    cmd = client.execute(1, 1, "bash", ["-c", f"while [ ! -e {go} ]; do sleep 0.02; done; echo 20::after"])
    wait_state(client, cmd.id, "RUNNING")
    outbox = keys.AgentKeys(1, 1).outbox
    controller = grid.controllers[0]
    busy_bus = fresh_bus(grid)
    script_error: list[Exception] = []

    def busy_script() -> None:
        try:
            busy_bus.eval("while true do end", 0)
        except redis.exceptions.ResponseError as exc:  # ended by SCRIPT KILL
            script_error.append(exc)

    bus.config_set("busy-reply-threshold", BUSY_THRESHOLD_MS)
    probe = fresh_bus(grid)
    controller.send_signal(signal.SIGSTOP)
    runner = threading.Thread(target=busy_script, daemon=True)
    try:
        go.touch()
        wait_until(lambda: any(b'"final":true' in envelope for envelope in bus.lrange(outbox, 0, -1)),
                   what="the result in the outbox, its bell rung")
        runner.start()
        wait_until(lambda: _refused_busy(probe), what="Redis answering BUSY")
        controller.send_signal(signal.SIGCONT)
        wait_until(lambda: "BUSY" in controller_log(grid), what="the controller meeting the busy bus")
        time.sleep(0.3)  # the fault lasting is the scenario: the drain for the bell is refused meanwhile
    finally:
        controller.send_signal(signal.SIGCONT)
        if runner.is_alive():
            fresh_bus(grid).script_kill()
            runner.join(TIMEOUT)
        probe.close()
    freed = time.monotonic()
    answer = cmd.get_next_result(TIMEOUT)
    took = time.monotonic() - freed
    print(f"result answered {took:.2f} s after Redis was free again: {(answer.state, answer.data)}; "
          f"outbox left {bus.llen(outbox)}")
    assert script_error, "the busy script ran until SCRIPT KILL"
    assert (answer.state, answer.data) == ("SUCCESS", "after"), "the result refused a drain is not lost"
    assert took < 10, "drained again within the refusal backoff, not at some later bell"
    assert bus.llen(outbox) == 0
    assert cmd.noblock_get_next_result() is None, "answered exactly once"
    assert client.cmd(1, 1, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"
    assert dead_processes(grid) == []
    busy_bus.close()


def _refused_busy(probe: redis.Redis) -> bool:
    try:
        probe.get("ac-test-probe")
    except redis.exceptions.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


# -- D: a result list nobody reads -------------------------------------------------------------------------------------

def test_a_recurring_job_nobody_reads_keeps_only_its_newest_results(make_grid):
    grid = make_grid([AgentSpec(1, 1)], heartbeat_interval=HEARTBEAT,
                     controller_config={"results": {"result_queue_max": 5}})
    client, bus = grid.client(), grid.redis
    job_id = "recurring-unread"
    queue = keys.result_queue(job_id)
    runs, lengths = 0, []
    with bus.pubsub(ignore_subscribe_messages=True) as updates:
        updates.subscribe(keys.job_updates(job_id))
        client.execute(1, 1, "true", args=acclient.RunArgs(recurring_period=0.2), id=job_id)
        deadline = time.monotonic() + TIMEOUT
        while runs < 15:  # each run's end is published on the job's updates channel
            assert time.monotonic() < deadline, f"only {runs} runs within {TIMEOUT} s"
            message = updates.get_message(timeout=0.1)
            if message is not None and json.loads(message["data"])["state"] == "SUCCESS":
                runs += 1
            lengths.append(bus.llen(queue))
    newest = json.loads(bus.lindex(queue, -1))
    kept = [json.loads(raw) for raw in bus.lrange(queue, 0, -1)]
    print(f"{runs} runs nobody read: cmds_queue_<id> length sampled {len(lengths)} times, at most "
          f"{max(lengths)}, now {len(kept)}; newest run started {now_ms() - newest['starttime']} ms ago")
    assert max(lengths) <= 5
    assert len(kept) == 5
    assert newest["state"] == "SUCCESS" and now_ms() - newest["starttime"] < 3000, "the newest run is kept"
    assert [job["starttime"] for job in kept] == sorted(job["starttime"] for job in kept), "in run order"
    client.cmd(1, 1, "kill", None, data=json.dumps({"id": job_id})).get_next_result(TIMEOUT)
    wait_state(client, job_id, "KILLED")
    assert bus.llen(queue) <= 5


def test_a_fanout_keeps_one_result_per_target_whatever_the_bound(make_grid):
    grid = make_grid([AgentSpec(1, 1, ("web",)), AgentSpec(1, 2, ("web",)), AgentSpec(2, 1, ("web",))],
                     heartbeat_interval=HEARTBEAT, controller_config={"results": {"result_queue_max": 1}})
    client, bus = grid.client(), grid.redis
    cmd = client.cmd(None, None, "ping", None, role="web", fanout=True)
    wait_until(lambda: {agent: job.state for agent, job in cmd.get_jobs().items()} ==
               dict.fromkeys([(1, 1), (1, 2), (2, 1)], "SUCCESS"), what="three answers")
    kept = [json.loads(raw) for raw in bus.lrange(keys.result_queue(cmd.id), 0, -1)]
    print(f"a fanout to 3 agents with result_queue_max = 1 keeps {len(kept)} results")
    assert sorted((job["gid"], job["nid"]) for job in kept) == [(1, 1), (1, 2), (2, 1)]


# -- E: commands left in a lane ----------------------------------------------------------------------------------------

def lane_connections(bus: redis.Redis) -> set[int]:
    """The ids of the controller's two lane connections: each waits in BLMOVE on cmds_queue in turn (one lane
    claims at a time, the other waits for the claim), so they are collected as they take turns."""
    seen: set[int] = set()

    def both() -> set[int] | None:
        seen.update(client["id"] for client in bus.client_list()
                    if client["cmd"] == "blmove" and client["name"].startswith("ac-controller-"))
        return seen if len(seen) >= 2 else None

    # A lane waits in BLMOVE at most CLAIM_WAIT (1 s) before the other may claim: both show within seconds.
    return wait_until(both, timeout=10, what="both lanes taking turns in BLMOVE (one lane never let the other claim)")


def test_commands_left_in_a_lane_are_routed_though_the_other_lane_holds_the_claim(make_grid):
    grid = make_grid([AgentSpec(1, 1)], heartbeat_interval=HEARTBEAT)
    bus = grid.redis
    assert run(bus, gid=1, nid=1)["state"] == "SUCCESS"
    lanes = sorted(member.decode() for member in bus.smembers(keys.CONTROLLERS))
    assert len(lanes) == 2 and lanes[1] == f"{lanes[0]}.1", lanes
    sent: list[str] = []
    took: list[float] = []
    for trial in range(4):
        lane = lanes[trial % 2]
        pings = [command(gid=1, nid=1) for _ in range(20)]
        sent += [ping["id"] for ping in pings]
        blocking = lane_connections(bus)
        assert len(blocking) == 2, blocking
        bus.rpush(keys.controller_inflight(lane), *(json.dumps(ping) for ping in pings))
        started = time.monotonic()
        for connection in blocking:
            bus.client_kill_filter(_id=connection)

        def answered(pings=pings):
            pipe = bus.pipeline()
            for ping in pings:
                pipe.llen(keys.result_queue(ping["id"]))
            return all(pipe.execute())

        wait_until(answered, timeout=TIMEOUT, what=f"trial {trial + 1}: the 20 pings left in lane {lane} answered")
        took.append(time.monotonic() - started)
        print(f"trial {trial + 1}: 20 pings left in lane {lane} answered {took[-1]:.2f} s after both lanes' "
              "connections were killed")
    assert all(seconds < 10 for seconds in took), took
    pipe = bus.pipeline()
    for job_id in sent:
        pipe.lrange(keys.result_queue(job_id), 0, -1)
    counts = {job_id: [json.loads(raw)["state"] for raw in found] for job_id, found in zip(sent, pipe.execute(),
                                                                                            strict=True)}
    assert {job_id: states for job_id, states in counts.items() if states != ["SUCCESS"]} == {}, \
        "every ping answered SUCCESS exactly once"
    assert [bus.llen(keys.controller_inflight(lane)) for lane in lanes] == [0, 0]
    assert controller_log(grid).count("routing 20 commands claimed before") == 4, "each trial took the leftover path"


# -- F: Redis restarted from its append-only file ----------------------------------------------------------------------

def heartbeat_time(bus: redis.Redis) -> int | None:
    raw = bus.get(keys.AgentKeys(1, 1).alive)
    return json.loads(raw)["time"] if raw else None


def test_a_redis_restarted_from_its_aof_does_not_skip_the_liveness_grace(make_grid):
    grid = make_grid([AgentSpec(1, 1)], heartbeat_interval=HEARTBEAT, controller_config=FAST)
    answers = []
    for trial in range(3):
        client = grid.client()
        cmd = client.execute(1, 1, "bash", ["-c", "sleep 8; echo 20::done"])
        wait_state(client, cmd.id, "RUNNING")
        time.sleep(1.1)  # the AOF (fsynced every second) holds the job and its agent's books
        grid.redis_server.stop()
        stopped_ms = now_ms()
        time.sleep(1.0)  # less than the heartbeat's lifetime (1.5 s): the restored key has a little left
        grid.redis_server.restart()
        restarted = time.monotonic()
        bus = fresh_bus(grid)
        restored_ttl = bus.pttl(keys.AgentKeys(1, 1).alive)
        gap = 0.0  # seconds seen with no heartbeat key, before the agent beat again on this Redis
        while (beat := heartbeat_time(bus)) is None or beat < stopped_ms:
            assert time.monotonic() - restarted < TIMEOUT, "the agent did not beat again"
            if beat is None:
                gap += 0.02
            time.sleep(0.02)
        back_after = time.monotonic() - restarted
        popped = bus.blpop(keys.result_queue(cmd.id), timeout=TIMEOUT)
        assert popped is not None, f"trial {trial + 1}: no answer"
        job = json.loads(popped[1])
        answers.append((job["state"], job["data"]))
        print(f"trial {trial + 1}: restored heartbeat {restored_ttl} ms to live, no heartbeat for ~{gap:.2f} s, "
              f"agent beating again {back_after:.2f} s after the restart; answer {answers[-1]}")
        bus.close()
    wrongly_lost = answers.count(("ERROR", "agent 1:1 lost"))
    print(f"answered 'agent 1:1 lost' wrongly: {wrongly_lost} of {len(answers)}")
    assert wrongly_lost == 0
    assert answers == [("SUCCESS", "done")] * 3
    bus = fresh_bus(grid)
    assert run(bus, gid=1, nid=1)["state"] == "SUCCESS"
    assert dead_processes(grid) == []


def test_a_restored_heartbeat_expiring_before_the_agent_is_back_is_no_loss(make_grid):
    """The window of the test above, made certain: the agent is paused (SIGSTOP) across the restart, so the
    heartbeat Redis restored expires while the agent is still away, well within the grace."""
    grid = make_grid([AgentSpec(1, 1)], heartbeat_interval=HEARTBEAT, controller_config=FAST)
    client = grid.client()
    cmd = client.execute(1, 1, "bash", ["-c", "sleep 7; echo 20::done"])
    wait_state(client, cmd.id, "RUNNING")
    time.sleep(1.1)  # the AOF holds the job
    first = heartbeat_time(grid.redis)
    wait_until(lambda: heartbeat_time(grid.redis) != first, what="a fresh heartbeat")
    agent = grid.agents["1:1"]
    agent.send_signal(signal.SIGSTOP)  # right after a beat: the key has most of its 1.5 s to live
    try:
        grid.redis_server.stop()
        time.sleep(0.3)  # the outage
        grid.redis_server.restart()
        restarted = time.monotonic()
        bus = fresh_bus(grid)
        restored_ttl = bus.pttl(keys.AgentKeys(1, 1).alive)
        assert restored_ttl > 0, "the heartbeat came back from the AOF"
        wait_until(lambda: not bus.exists(keys.AgentKeys(1, 1).alive), what="the restored heartbeat expiring")
        expired_after = time.monotonic() - restarted
        time.sleep(1.5)  # the agent stays away for 15 sweeps more: the fault lasting
        unanswered = bus.llen(keys.result_queue(cmd.id))
        away = time.monotonic() - restarted
    finally:
        agent.send_signal(signal.SIGCONT)
    popped = bus.blpop(keys.result_queue(cmd.id), timeout=TIMEOUT)
    answer = json.loads(popped[1])
    print(f"restored heartbeat {restored_ttl} ms to live, expired {expired_after:.2f} s after the restart; agent "
          f"away {away:.2f} s after it (grace: 1.5 s + 5 s); answer {(answer['state'], answer['data'])}")
    assert unanswered == 0, "nothing answered while the agent was away within the grace"
    assert (answer["state"], answer["data"]) == ("SUCCESS", "done")
    assert bus.llen(keys.result_queue(cmd.id)) == 0
    bus.close()


def test_an_agent_really_killed_is_still_answered_lost_in_time(make_grid):
    grid = make_grid([AgentSpec(1, 1)], heartbeat_interval=HEARTBEAT, controller_config=FAST)
    client, bus = grid.client(), grid.redis
    cmd = client.execute(1, 1, "sleep", ["30"])
    wait_state(client, cmd.id, "RUNNING")
    killed = time.monotonic()
    grid.stop_agent("1:1", kill=True)
    lost = cmd.get_next_result(TIMEOUT)
    took = time.monotonic() - killed
    print(f"a SIGKILLed agent's job answered {took:.2f} s after the kill (limit: 3 beats + 1 s = "
          f"{3 * HEARTBEAT + 1:g} s)")
    assert (lost.state, lost.data) == ("ERROR", "agent 1:1 lost")
    assert took <= 3 * HEARTBEAT + 1
    grid.start_agent("1:1")  # stops the sleep its previous run left, answers it (that late answer is dropped)
    assert run(bus, gid=1, nid=1)["state"] == "SUCCESS"
    wait_until(lambda: says_result_dropped(controller_log(grid), cmd.id), what="the late answer dropped")
    assert bus.llen(keys.result_queue(cmd.id)) == 0, "answered exactly once"
