"""Scale: one controller and one Redis against fleets of N agent identities (N = 1 000, 5 000, 10 000).

    python -m bench.scale [--sizes 1000,5000,10000] [--per-process 2500] [--idle 30] [--pings 300]

For each N, a fresh grid: a private redis-server (``maxclients`` raised for
N, as docs/operations.md says), one controller, and N identities hosted by
swarm processes (``ac-agent --swarm``, at most ``--per-process`` each), every
identity a full agent on the wire (an intake connection of its own; the
identities of a process share the other). Each figure stands beside a limit
measured in the same run:

* connections: those of one real ``ac-agent`` started alone (Redis's
  connected clients before and after), and per swarm identity (over N).
* idle Redis ops per agent per second: every command Redis ran in
  ``--idle`` seconds (INFO commandstats, the calls scripts make included)
  with the fleet registered and doing nothing, over N; beside the
  heartbeats alone (the agents' ``SET`` calls in the same seconds).
* role-routed ``ping`` p50, sequential through ``acclient``, beside direct
  pings (gid and nid) in the same fleet.
* registration: what N agents send as they start (a first heartbeat, and an
  outbox write of their registration: ``MULTI``, ``SET outseq``, ``RPUSH``,
  ``PUBLISH`` bell, ``EXEC``) sent at once, until the controller announced
  every one (``agent_registered``); beside the same writes sent by one client
  and taken back out of the N outboxes (``LPOP`` and ``HSET`` in the
  registry hash each): the bus moving each registration once in, once out.
"""

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis

from acgrid.launcher import AgentSpec, Grid
from acgrid.redis_server import RedisServer
from bench.table import Row, print_table
from protocol import envelope, keys
from protocol.events import decode_event
from protocol.presence import HEARTBEAT_BEATS, Heartbeat, Registration

SIZES = (1000, 5000, 10000)
HEARTBEAT_INTERVAL = 2.0  # the agents' default
SWARM_ROLE = "scale"
SYNTHETIC_GID = 900  # the registration phase's identities: no process behind them


def raise_file_limit(wanted: int) -> int:
    """Allow this process and its children ``wanted`` open files if we may (root may raise the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def swarm_specs(size: int, per_process: int) -> list[AgentSpec]:
    return [AgentSpec(1, first + 1, (SWARM_ROLE,), swarm=min(per_process, size - first))
            for first in range(0, size, per_process)]


def connected_clients(bus: redis.Redis) -> int:
    return int(bus.info("clients")["connected_clients"])


def command_calls(bus: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in bus.info("commandstats").items()}


def idle_ops(bus: redis.Redis, seconds: float) -> tuple[float, float, dict[str, float]]:
    """Commands Redis ran per second in ``seconds`` of idling: all of them, the ``SET`` calls, and the top ones."""
    before, started = command_calls(bus), time.monotonic()
    time.sleep(seconds)
    after, elapsed = command_calls(bus), time.monotonic() - started
    rates = {name: (calls - before.get(name, 0)) / elapsed for name, calls in after.items()}
    rates["info"] = max(0.0, rates.get("info", 0.0) - 1 / elapsed)  # our own INFO
    top = dict(sorted(((name, rate) for name, rate in rates.items() if rate > 0), key=lambda item: -item[1])[:6])
    return sum(rates.values()), rates.get("set", 0.0), top


def ping_p50(send: Callable[[], object], count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        send()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class BenchKeys:
    """Keys like an agent's, out of the controller's sight: for the bus alone."""

    def __init__(self, nid: int) -> None:
        self.alive, self.outbox_seq, self.outbox, self.bell = (f"bench:scale:{nid}:{name}"
                                                               for name in ("alive", "outseq", "outbox", "bell"))


def registration_writes(size: int, keys_of: Callable[[int], object]) -> list[tuple]:
    """What ``size`` agents that start send: a first heartbeat, and an outbox write of their registration."""
    commands: list[tuple] = []
    ttl_ms = int(HEARTBEAT_BEATS * HEARTBEAT_INTERVAL * 1000)
    for nid in range(1, size + 1):
        agent: Any = keys_of(nid)
        registration = Registration(SYNTHETIC_GID, nid, roles=("synthetic",), heartbeat_interval=HEARTBEAT_INTERVAL)
        commands += [("SET", agent.alive, Heartbeat(0, 0).to_json(), "PX", ttl_ms, "GET"),
                     ("MULTI",), ("SET", agent.outbox_seq, 1),
                     ("RPUSH", agent.outbox, envelope.register_envelope(registration)), ("PUBLISH", agent.bell, ""),
                     ("EXEC",)]
    return commands


def send(bus: redis.Redis, commands: list[tuple]) -> None:
    with bus.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute()


def raw_registration_seconds(bus: redis.Redis, size: int) -> float:
    """The writes sent, then each registration taken out of its outbox into the registry hash."""
    writes = registration_writes(size, BenchKeys)
    started = time.perf_counter()
    send(bus, writes)
    with bus.pipeline(transaction=False) as pipe:
        for nid in range(1, size + 1):
            pipe.lpop(BenchKeys(nid).outbox)
        popped = pipe.execute()
    send(bus, [("HSET", "bench:scale:agents", keys.agent_name(SYNTHETIC_GID, nid), raw)
               for nid, raw in enumerate(popped, start=1)])
    elapsed = time.perf_counter() - started
    assert all(popped), "every outbox held its registration"
    send(bus, [("DEL", BenchKeys(nid).outbox_seq, BenchKeys(nid).alive) for nid in range(1, size + 1)]
         + [("DEL", "bench:scale:agents")])
    return elapsed


def controller_registration_seconds(bus: redis.Redis, size: int) -> float:
    """The writes sent, until the controller announced the last of the ``size`` registrations."""
    writes = registration_writes(size, lambda nid: keys.AgentKeys(SYNTHETIC_GID, nid))
    pubsub = bus.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.EVENTS)
    try:
        waiting = {keys.agent_name(SYNTHETIC_GID, nid) for nid in range(1, size + 1)}
        started = time.perf_counter()
        send(bus, writes)
        deadline = time.monotonic() + 300
        while waiting and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1.0)
            if message is not None:
                event = decode_event(message["data"])
                if event.get("event") == "agent_registered":
                    waiting.discard(event.get("agent"))
        elapsed = time.perf_counter() - started
    finally:
        pubsub.close()
    assert not waiting, f"{len(waiting)} of {size} registrations never announced"
    return elapsed


def measure_size(size: int, per_process: int, idle: float, pings: int) -> list[Row]:
    rows = []
    maxclients = 2 * size + 1000
    raise_file_limit(maxclients + 64 + 8 * per_process)
    with RedisServer(extra_args=("--maxclients", str(maxclients)), persistence=False) as server, \
            Grid([AgentSpec(99, 1, ("alone",))], bus_url=server.url, heartbeat_interval=HEARTBEAT_INTERVAL,
                 log_level="WARNING") as grid:
        bus = grid.redis
        before = connected_clients(bus)
        grid.stop_agent("99:1")
        alone = before - connected_clients(bus)
        rows.append(Row("connections of one ac-agent (no tunnel open)", alone, "", 2, "aim: at most 2", "<= 2",
                        higher_is_better=False, as_multiple=True))
        baseline = connected_clients(bus)
        started = time.perf_counter()
        grid.start_agents(swarm_specs(size, per_process))
        rows.append(Row(f"{size} swarm identities started and registered", time.perf_counter() - started, "s"))
        per_agent = (connected_clients(bus) - baseline) / size
        rows.append(Row(f"connections per swarm identity at N={size}", per_agent, "", 2, "aim: at most 2", "<= 2",
                        higher_is_better=False, as_multiple=True))
        time.sleep(3 * HEARTBEAT_INTERVAL)  # past the registrations' echoes: only beats and sweeps
        total, sets, top = idle_ops(bus, idle)
        shown = ", ".join(f"{name} {rate / size:.2f}" for name, rate in top.items())
        rows.append(Row(f"idle Redis ops per agent per second at N={size} ({shown})", total / size, "/s",
                        sets / size, "heartbeats alone (SET calls)", "<= 1.5x", higher_is_better=False,
                        as_multiple=True))
        client = grid.client()
        direct = ping_p50(lambda: client.cmd(1, 1, "ping", None).get_next_result(timeout=30), pings)
        role = ping_p50(lambda: client.cmd(1, None, "ping", None, role=SWARM_ROLE).get_next_result(timeout=30),
                        pings)
        rows.append(Row(f"role ping p50 at N={size} (sequential, through acclient)", 1000 * role, "ms",
                        1000 * direct, "direct pings (gid, nid)", "<= 1.5x", higher_is_better=False, as_multiple=True))
        raw = raw_registration_seconds(bus, size)
        registered = controller_registration_seconds(bus, size)
        rows.append(Row(f"registering {size} agents at once, until the controller announced each", registered, "s",
                        raw, "the bus alone: writes in, taken out", "<= 3x", higher_is_better=False, as_multiple=True))
    return rows


def measure(sizes: tuple[int, ...] = SIZES, per_process: int = 2500, idle: float = 30.0, pings: int = 300
            ) -> list[Row]:
    rows = []
    for size in sizes:
        rows += measure_size(size, per_process, idle, pings)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="fleet sizes (default 1000,5000,10000)")
    parser.add_argument("--per-process", type=int, default=2500, help="identities per swarm process (default 2500)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idling measured (default 30)")
    parser.add_argument("--pings", type=int, default=300, help="pings of each kind (default 300)")
    options = parser.parse_args(argv)
    print_table(measure(tuple(int(size) for size in options.sizes.split(",")), options.per_process, options.idle,
                        options.pings))


if __name__ == "__main__":
    main()
