"""Fanout of ``ping`` to every agent of a role, for 10, 100 and 1 000 agents.

    python -m bench.fanout [--sizes 10,100,1000] [--rounds 5]

One grid: a private redis-server, one controller, and for each size N a role
``fanout-N`` held by N agents, hosted by swarm processes (``ac-agent
--swarm``, at most ``--per-process`` identities each, so both cores work).
The clock runs from ``client.cmd(..., role=..., fanout=True)`` until the last
of the N results is in the client (``Cmd.iter_results``). The median of
``--rounds`` rounds is reported, and the slowest. The limit is the time the
client alone takes to push N commands to N queues and pop N results that
are already waiting, on the same Redis (what the path costs without a
controller or agents): fanout cannot be faster than that.

Beside each fanout, a program fanning out commands of its own to the same N
agents: one command per agent (each its own ``gid``/``nid``), sent together
with ``Client.submit`` and read with ``Client.iter_results``. Its limit is
the controller's fanout of the same size, measured just before: a program's
own list of commands should cost what the controller's batching does.
"""

import argparse
import json
import statistics
import time

import redis

from acgrid.launcher import AgentSpec, Grid
from bench.table import Row, print_table

SIZES = (10, 100, 1000)
AIMS = {1000: "<= 1 s"}


def swarms(sizes: tuple[int, ...], per_process: int) -> list[AgentSpec]:
    """Agents for every size, on consecutive grids ids, ``per_process`` identities per process at most."""
    specs = []
    for gid, size in enumerate(sizes, start=1):
        for first in range(0, size, per_process):
            specs.append(AgentSpec(gid, first + 1, (f"fanout-{size}",), swarm=min(per_process, size - first)))
    return specs


def fanout_seconds(grid: Grid, size: int) -> float:
    client = grid.client()
    started = time.perf_counter()
    cmd = client.cmd(None, None, "ping", None, role=f"fanout-{size}", fanout=True)
    answered = sum(1 for job in cmd.iter_results(timeout=120) if job.state == "SUCCESS")
    elapsed = time.perf_counter() - started
    assert answered == size, f"{answered} of {size} agents answered"
    return elapsed


def submit_seconds(grid: Grid, specs: list[AgentSpec], size: int) -> float:
    """One command per agent of role ``fanout-<size>``, sent in one ``Client.submit``, until every result is in."""
    client = grid.client()
    agents = [(spec.gid, spec.nid + index) for spec in specs if spec.roles == (f"fanout-{size}",)
              for index in range(spec.swarm)]
    started = time.perf_counter()
    cmds = client.submit({"gid": gid, "nid": nid, "cmd": "ping"} for gid, nid in agents)
    answered = sum(1 for job in client.iter_results(cmds, timeout=120) if job.state == "SUCCESS")
    elapsed = time.perf_counter() - started
    assert answered == size, f"{answered} of {size} agents answered"
    return elapsed


def raw_round_trip(bus: redis.Redis, size: int) -> float:
    """Push ``size`` items to ``size`` lists and pop ``size`` waiting results: two pipelined round trips."""
    queues = [f"bench:fanout:{index}" for index in range(size)]
    results = "bench:fanout:results"
    started = time.perf_counter()
    with bus.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.rpush(queue, json.dumps({"id": "x", "cmd": "ping", "gid": 1, "nid": 1}))
            pipe.rpush(results, json.dumps({"id": "x", "state": "SUCCESS", "data": "pong"}))
        pipe.execute()
    popped = bus.lpop(results, size)
    elapsed = time.perf_counter() - started
    assert len(popped) == size
    bus.delete(*queues)
    return elapsed


def measure(sizes: tuple[int, ...] = SIZES, rounds: int = 5, per_process: int = 500) -> list[Row]:
    specs = swarms(sizes, per_process)
    with Grid(specs, heartbeat_interval=5.0, log_level="WARNING") as grid:
        rows = []
        for size in sizes:
            fanout_seconds(grid, size)  # warm-up: every agent has answered once
            times = [fanout_seconds(grid, size) for _ in range(rounds)]
            submits = [submit_seconds(grid, specs, size) for _ in range(rounds)]
            raw = statistics.median(raw_round_trip(grid.redis, size) for _ in range(rounds))
            fanout = statistics.median(times)
            rows.append(Row(f"fanout ping to {size} agents, until all results are in (median of {rounds}; "
                            f"slowest {1000 * max(times):.0f} ms)", 1000 * fanout, "ms", 1000 * raw,
                            "client alone: push N commands, pop N results", AIMS.get(size, ""),
                            higher_is_better=False))
            rows.append(Row(f"{size} pings of a program's own, one per agent (Client.submit, Client.iter_results; "
                            f"median of {rounds}, slowest {1000 * max(submits):.0f} ms)",
                            1000 * statistics.median(submits), "ms", 1000 * fanout, "the fanout above",
                            "as fast", higher_is_better=False))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="agents per fanout (default 10,100,1000)")
    parser.add_argument("--rounds", type=int, default=5, help="fanouts per size (default 5)")
    parser.add_argument("--per-process", type=int, default=500, help="identities per swarm process (default 500)")
    options = parser.parse_args(argv)
    sizes = tuple(int(size) for size in options.sizes.split(","))
    print_table(measure(sizes, options.rounds, options.per_process))


if __name__ == "__main__":
    main()
