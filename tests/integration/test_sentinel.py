"""A bus made highly available by Redis Sentinel (ac-grid's topology: a master, a replica, three sentinels on
loopback ports). Every part follows a failover by itself; what a failover to a replica that missed the last
writes takes is answered with its reason, never left waiting; TLS and passwords work through it; a Sentinel
address that cannot work says why."""

import dataclasses
import json
import os
import re
import signal
import time

import pytest
import trio
from cli_support import Running, ac, ac_grid, environment
from legacy_client import LEGACY_CLIENT, bounded, load
from support import TIMEOUT, wait_state, wait_until

import acclient
from acbus.connection import ConnectionLost, ReplyError, connect, find_master
from acgrid.launcher import AgentSpec, Grid
from protocol import keys

FAST = {"agents": {"sweep_interval": 0.1}, "routing": {"takeover_after": 1.0}}


def alive(client: acclient.Client, gid: int, nid: int) -> bool:
    return any(agent["alive"] for agent in client.list_agents(TIMEOUT)
               if (agent["gid"], agent["nid"]) == (gid, nid))


def ac_env(grid: Grid) -> dict[str, str]:
    """What ``ac-grid --sentinel`` tells an operator to paste."""
    extra = {"AC_SENTINEL_PASSWORD": grid.topology.sentinel_password} if grid.topology.sentinel_password else {}
    if grid.topology.node_password:
        extra["AC_PASSWORD"] = grid.topology.node_password
    if grid.tls_files:
        extra.update(AC_CA_FILE=str(grid.tls_files.ca), AC_CERT_FILE=str(grid.tls_files.client_cert),
                     AC_KEY_FILE=str(grid.tls_files.client_key))
    return environment(grid.bus_url, **extra)


def topology_logs(grid: Grid) -> str:
    """The tails of the data nodes' and the first sentinel's logs, for a failover that went otherwise."""
    assert grid.topology is not None
    parts = [*grid.topology.nodes, grid.topology.sentinels[0]]
    return "".join(f"\n--- {part.log_path}:\n{part.log_path.read_text(errors='replace')[-2500:]}" for part in parts)


def fail_over(grid: Grid) -> tuple[float, float]:
    """SIGKILL the master; return (seconds until the sentinels named the new one, until a ping was answered)."""
    assert grid.topology is not None
    client = grid.client()
    killed_at = time.monotonic()
    old = grid.topology.kill_master()
    grid.topology.await_failover(old)
    promoted = time.monotonic() - killed_at
    assert client.cmd(1, 1, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"
    return promoted, time.monotonic() - killed_at


def test_every_part_follows_a_failover_an_agent_cut_off_during_it_too(make_grid):
    grid = make_grid([AgentSpec(1, 1), AgentSpec(1, 2)], sentinel=True, controller_config=FAST)
    client = grid.client()
    job = client.execute(1, 1, "bash", ["-c", "sleep 3; echo 20::survived"])  # runs across the failover
    wait_state(client, job.id, "RUNNING")
    waiting_ac = Running(grid.bus_url, "exec", "-g", "1", "-n", "1", "--shell", "sleep 3; echo through")
    assert waiting_ac.next_line("err").startswith("job ")
    cut_off = grid.agents["1:2"]
    os.kill(cut_off.pid, signal.SIGSTOP)  # the agent is away while the bus fails over
    try:
        promoted, routed = fail_over(grid)
    finally:
        os.kill(cut_off.pid, signal.SIGCONT)
    print(f"failover: the sentinels named the new master {promoted:.2f} s after the kill, a ping was answered "
          f"{routed:.2f} s after it")
    assert routed < 15

    result = job.get_next_result(TIMEOUT)
    assert (result.state, result.data) == ("SUCCESS", "survived"), "the job's result came through the new master"
    assert grid.redis.llen(keys.result_queue(job.id)) == 0, "once"
    lines = waiting_ac.rest()
    assert waiting_ac.wait() == 0 and lines[0].startswith("== 1:1 SUCCESS") and "through" in lines, lines
    wait_until(lambda: alive(client, 1, 2), what="the agent cut off during the failover finding the new master")
    assert client.cmd(1, 2, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"
    listed = ac(None, "agents", "--json", env=ac_env(grid))
    assert listed.code == 0 and [(agent["nid"], agent["alive"]) for agent in json.loads(listed.out)] == \
        [(1, True), (2, True)], listed.err
    controller_log = grid.log_path("controller-0").read_text()
    assert "the bus has a new master (a failover)" in controller_log, controller_log[-4000:] + topology_logs(grid)
    assert "the master of 'ac' moved from" in grid.log_path("agent-1-2").read_text()
    assert grid.redis.get(keys.BUS_EPOCH).startswith(keys.FAILOVER_EPOCH_PREFIX.encode())


def test_an_agent_away_during_a_failover_keeps_its_jobs_within_the_liveness_grace(make_grid):
    """Its heartbeat (1.5 s to live) is gone on the new master, promoted after 3 s or more; a restarted Redis gives
    agents one heartbeat lifetime plus the longest reconnect delay to beat again, counted from its start. A
    promoted replica has been up all along: the grace counted from there was over before the failover ended,
    and an agent a moment late (here: paused until the controller has looked) had its jobs answered lost,
    though it finished them. Now the grace counts from when the controller found the new master."""
    grid = make_grid([AgentSpec(1, 1), AgentSpec(1, 2)], sentinel=True, controller_config=FAST)
    topology = grid.topology
    replica = topology.node_client(next(node for node in topology.nodes if node.port != topology.master().port))
    # The scenario is a replica up for longer than that grace (1.5 s + 5 s), as any in production.
    wait_until(lambda: replica.info("server")["uptime_in_seconds"] >= 8, timeout=60, interval=0.5,
               what="the replica up for 8 s")
    client = grid.client()
    job = client.execute(1, 2, "bash", ["-c", "sleep 2; echo 20::survived"])
    wait_state(client, job.id, "RUNNING", (1, 2))
    late = grid.agents["1:2"]
    os.kill(late.pid, signal.SIGSTOP)
    try:
        fail_over(grid)
        wait_until(lambda: not alive(client, 1, 2), what="the controller finding 1:2's heartbeat gone")
    finally:
        os.kill(late.pid, signal.SIGCONT)
    result = job.get_next_result(TIMEOUT)
    print(f"the job of the agent paused across the failover: {(result.state, result.data)}")
    assert (result.state, result.data) == ("SUCCESS", "survived"), "not answered lost while within the grace"
    assert job.noblock_get_next_result() is None
    wait_until(lambda: alive(client, 1, 2), what="1:2 beating on the new master")


def test_a_failover_to_a_replica_that_missed_the_last_writes_answers_every_command(make_grid, tmp_path):
    """The replica is stopped (SIGSTOP) and its link to the master cut while the master takes writes it will
    never see, then the master is killed and the stale replica promoted: a partial loss of the bus's data.
    Each command ends with one answer that says what happened: a command the bus forgot is CommandLost; one
    the agent had taken again (its take undone) runs once, and so does one it had also answered (take and
    answer undone: its answer is written again, the copy back in its queue dropped); one whose result vanished
    with the old master has
    it written again by its agent (not run again, although its command was still in the agent's inflight list
    there) and is answered once; one the agent ran while the bus forgot it altogether is adopted, and its
    result reaches the client."""
    grid = make_grid([AgentSpec(1, 1), AgentSpec(1, 2)], sentinel=True, controller_config=FAST)
    client, topology = grid.client(), grid.topology
    replica = next(node for node in topology.nodes if node.port != topology.master().port)
    replica_bus = topology.node_client(replica)
    runs = tmp_path / "runs"

    def job(name: str, seconds: float) -> list[str]:
        return ["-c", f"echo {name} >> {runs}; sleep {seconds}; echo 20::{name}-done"]

    rerun = client.execute(1, 1, "bash", job("rerun", 2), id="rerun")  # ends while the replica is away
    wait_state(client, "rerun", "RUNNING")
    agent_2 = grid.agents["1:2"]
    os.kill(agent_2.pid, signal.SIGSTOP)
    master_bus = topology.node_client(topology.master())
    for connection in master_bus.client_list():  # so that the next command waits in its queue (no BLMOVE waits)
        if connection["name"] == "ac-agent-1:2":
            master_bus.client_kill(connection["addr"])
    retaken = client.execute(1, 2, "bash", job("retaken", 4), id="retaken")  # waits in 1:2's queue
    answered = client.execute(1, 2, "bash", job("answered", 0.2), id="answered")  # likewise, then answered
    wait_until(lambda: replica_bus.llen(keys.AgentKeys(1, 2).commands) == 2, what="the replica having them queued")
    os.kill(replica.process.pid, signal.SIGSTOP)
    master_bus.client_kill_filter(_type="replica")  # from here on, nothing the master takes reaches the replica
    try:
        os.kill(agent_2.pid, signal.SIGCONT)  # takes it (on the master only) and runs it
        wait_state(client, "retaken", "RUNNING", agent=(1, 2))
        wait_state(client, "answered", "SUCCESS", agent=(1, 2))  # its take and its answer on the master only
        adopted = client.execute(1, 2, "bash", job("adopted", 3), id="adopted")  # known to the master only
        wait_state(client, "adopted", "RUNNING", agent=(1, 2))
        wait_state(client, "rerun", "SUCCESS")  # its result on the master only
        grid.stop_controller(0)
        lost = client.cmd(1, 1, "ping", None, id="lost")  # waits in cmds_queue, on the master only
        old = topology.kill_master()
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    topology.await_failover(old)
    grid.start_controller(0)  # it was away during the failover: it notices the new master itself

    answers = {}
    for cmd in (rerun, retaken, answered, adopted, lost):
        try:
            result = cmd.get_next_result(TIMEOUT)
            answers[cmd.id] = (result.state, result.data)
        except acclient.CommandLost as exc:
            answers[cmd.id] = ("CommandLost", "failover" if exc.failover else "data lost")
    ran = runs.read_text().split()
    leftovers = {cmd.id: grid.redis.llen(keys.result_queue(cmd.id)) for cmd in (rerun, retaken, answered, adopted,
                                                                             lost)}
    print(f"answers: {answers}; runs: {sorted(ran)}; results left over: {leftovers}")
    assert answers == {"rerun": ("SUCCESS", "rerun-done"), "retaken": ("SUCCESS", "retaken-done"),
                       "answered": ("SUCCESS", "answered-done"), "adopted": ("SUCCESS", "adopted-done"),
                       "lost": ("CommandLost", "failover")}
    assert sorted(ran) == ["adopted", "answered", "rerun", "retaken"], \
        "each ran once, also the one whose result vanished and the one whose take and answer did"
    assert set(leftovers.values()) == {0}, "no result twice"


def test_a_result_popped_as_the_master_died_is_found_again_in_the_job_results(make_grid):
    """A client's pop that reached the master and was replicated, whose reply died with the master: the new
    master has the result in no queue, and no agent will send it again. The client reads it from the job's
    results once the bus's epoch says it failed over, with ``get_next_result`` and with ``iter_results``
    across commands; a result it did receive is not given twice."""
    grid = make_grid([AgentSpec(1, 1)], sentinel=True, controller_config=FAST)
    client, topology = grid.client(), grid.topology
    received = client.cmd(1, 1, "ping", None)
    assert received.get_next_result(TIMEOUT).state == "SUCCESS"
    alone = client.cmd(1, 1, "ping", None)
    several = [client.cmd(1, 1, "ping", None) for _ in range(3)]
    master = topology.node_client(topology.master())
    for cmd in (alone, *several):  # the pops our client's connection made, whose replies never came back
        assert master.blpop([keys.result_queue(cmd.id)], timeout=TIMEOUT) is not None
    assert master.wait(1, 5000) == 1, "the replica has the pops"
    fail_over(grid)

    assert alone.get_next_result(TIMEOUT).state == "SUCCESS"
    assert sorted(job.id for job in client.iter_results(several, TIMEOUT)) == sorted(cmd.id for cmd in several)
    for cmd in (received, alone):
        with pytest.raises(TimeoutError):
            cmd.get_next_result(2)


def test_a_failover_with_tls_and_sentinels_that_require_a_password(make_grid):
    """TLS everywhere (clients, replication, the sentinels) and passwords of their own for the data nodes and
    the sentinels: the daemons, the client and ac follow the failover; wrong credentials, an unknown service
    and sentinels nobody can reach each say so in one line."""
    grid = make_grid([AgentSpec(1, 1)], sentinel=True, tls=True, sentinel_auth=True, controller_config=FAST)
    assert grid.bus_url.startswith("rediss+sentinel://")
    promoted, routed = fail_over(grid)
    print(f"failover with TLS and passwords: new master named after {promoted:.2f} s, a ping answered after "
          f"{routed:.2f} s")
    exec_ran = ac(None, "exec", "-g", "1", "-n", "1", "--", "echo", "through", env=ac_env(grid))
    assert exec_ran.code == 0 and "through" in exec_ran.out, exec_ran.err

    wrong = ac(None, "agents", env={**ac_env(grid), "AC_SENTINEL_PASSWORD": "wrong"})
    assert wrong.code == 6 and wrong.err.startswith("ac: no sentinel of rediss+sentinel://"), wrong.err
    assert "--sentinel-password" in wrong.err and wrong.seconds < 10

    address = grid.address

    def problem(**changes: object) -> str:
        async def ask() -> None:
            await find_master(dataclasses.replace(address, **changes))

        with pytest.raises(ConnectionLost) as caught:
            trio.run(ask)
        return str(caught.value)

    assert "service 'nosuch' is unknown to the sentinels at 127.0.0.1:" in problem(service="nosuch")
    assert "WRONGPASS" in problem(sentinel_password="wrong") or "invalid" in problem(sentinel_password="wrong")
    assert "cannot reach the bus at rediss://127.0.0.1:1/0" in problem(sentinels=(("127.0.0.1", 1),))


def test_ac_grid_sentinel_starts_the_topology_and_survives_killing_the_master_it_names():
    """What a user tries with one command: ``ac-grid --sentinel``, the AC_BUS it prints pasted, the master's pid
    killed as printed; ``ac`` rides out the failover."""
    with ac_grid("--sentinel", "--agents", "1") as (lines, exports):
        assert exports["AC_BUS"].startswith("redis+sentinel://127.0.0.1:"), lines
        master_pid = int(re.search(r"master 127\.0\.0\.1:\d+ \(pid (\d+)\)", "\n".join(lines)).group(1))
        env = environment(exports["AC_BUS"])
        assert ac(None, "agents", env=env).lines[-1] == "1 agent: 1 alive, 0 dead"
        os.kill(master_pid, signal.SIGKILL)
        ran = ac(None, "exec", "-g", "1", "-n", "1", "--", "echo", "after the failover", env=env)
        assert ran.code == 0 and "after the failover" in ran.out, ran.err
        print(f"ac exec sent as the master was killed: answered in {ran.seconds:.2f} s")


@pytest.mark.skipif(not LEGACY_CLIENT.is_file(), reason=f"the 2015 client is not there ({LEGACY_CLIENT})")
def test_a_switch_while_the_old_master_lives_on_as_a_replica_is_followed_and_the_2015_client_keeps_its_address(
        make_grid):
    """SENTINEL FAILOVER: the old master goes on answering (the sentinels make it a replica at their next look,
    up to 10 s later). The daemons do not wait for that: they follow +switch-master at once; the client
    follows; the 2015 client, given the master's address, talks to that one, and after the switch to the new
    master's."""
    grid = make_grid([AgentSpec(1, 1)], sentinel=True, controller_config=FAST)
    topology, client = grid.topology, grid.client()
    legacy = load()
    old = topology.master()
    before = legacy.Client("127.0.0.1", old.port)
    assert bounded(before.cmd(1, 1, "ping", legacy.RunArgs()).get_next_result, 10).state == "SUCCESS"
    started = time.monotonic()
    topology.ask_sentinel("SENTINEL", "FAILOVER", "ac")
    new = topology.await_failover(old)
    switched = time.monotonic() - started
    assert client.cmd(1, 1, "ping", None).get_next_result(TIMEOUT).state == "SUCCESS"
    print(f"SENTINEL FAILOVER: new master after {switched:.2f} s, a ping answered after "
          f"{time.monotonic() - started:.2f} s")
    after = legacy.Client("127.0.0.1", new.port)
    assert bounded(after.cmd(1, 1, "ping", legacy.RunArgs()).get_next_result, 10).state == "SUCCESS"
    assert topology.node_client(old).ping(), "it lives on (the sentinels make it a replica at their next look)"
    for name in ("controller-0", "agent-1-1"):
        assert f"moved from 127.0.0.1:{old.port} to 127.0.0.1:{new.port}" in grid.log_path(name).read_text()


def test_a_connection_left_on_a_master_made_a_replica_breaks_at_its_first_write(make_grid):
    """A connection to the node the sentinels named, left there while that node is made a replica (no
    +switch-master reached its user): its first write meets READONLY, and it breaks itself, so that its user
    connects again, to the master the sentinels name now."""
    grid = make_grid([AgentSpec(1, 1)], sentinel=True, controller_config=FAST)
    topology = grid.topology
    old = topology.master()

    async def left_behind() -> None:
        async with connect(grid.address, "left-behind") as connection:
            topology.ask_sentinel("SENTINEL", "FAILOVER", "ac")
            new = topology.await_failover(old)
            topology.node_client(old).execute_command("REPLICAOF", "127.0.0.1", new.port)  # as the sentinels will
            assert connection.is_open
            with pytest.raises(ReplyError, match="READONLY"):
                await connection.execute("SET", "ac:test:written", "1")
            assert not connection.is_open
        async with connect(grid.address, "again") as connection:
            assert connection.master == ("127.0.0.1", new.port)

    trio.run(left_behind)
