"""One agent floods the controller with log messages: how much slower do its answers, and a bystander's, get?

    python -m bench.flood [--messages 1000000]

A job on agent 1:1 prints ``--messages`` level-4 lines as fast as it can;
its AC logger sends every one to the controller. Meanwhile this process
pings 1:1 and a bystander agent 1:2, one at a time, in turn. The limit of
each figure is the same agent's ping round trip with no flood, measured in
the same run just before; the aim is at most twice that at p99. Also
reported: the longest single call Redis ran during the flood (its slow log),
which no drain of the flood may stretch beyond a few milliseconds.
"""

import argparse
import sys
import time
from dataclasses import dataclass

import acclient
from acgrid.launcher import AgentSpec, Grid
from bench.latency import percentile
from bench.table import Row, print_table

QUIET_PINGS = 300
#: Redis logs every call slower than this (microseconds) while the flood runs.
SLOW_CALL_US = 1000
FLOODING = {"logging": {"db": {"type": "DB", "log_dir": "logs", "levels": "9"},
                        "ac": {"type": "AC", "flush_int": 0.2, "levels": "4"}}}


@dataclass
class Flood:
    messages: int
    quiet: dict[str, list[float]]  # agent -> ping round trips (s) before the flood
    flooded: dict[str, list[float]]  # agent -> ping round trips (s) during it
    seconds: float  # how long the flooding job ran
    slowest_call_ms: float  # the longest single Redis call during the flood
    slow_calls: int  # calls over SLOW_CALL_US
    logged: int  # flood messages in the controller's log of 1:1 afterwards


def ping(client: acclient.Client, nid: int) -> float:
    started = time.perf_counter()
    job = client.cmd(1, nid, "ping", None).get_next_result(60)
    assert job.state == "SUCCESS", job.dump()
    return time.perf_counter() - started


def run_flood(grid: Grid, messages: int) -> Flood:
    """Flood from 1:1 while pinging 1:1 and 1:2 in turn; the grid's agents must be configured as ``grid()``."""
    client = grid.client()
    quiet: dict[str, list[float]] = {"1:1": [], "1:2": []}
    for _ in range(QUIET_PINGS):
        quiet["1:1"].append(ping(client, 1))
        quiet["1:2"].append(ping(client, 2))
    grid.redis.config_set("slowlog-log-slower-than", SLOW_CALL_US)
    grid.redis.slowlog_reset()
    script = f"import sys\nw = sys.stdout.write\nfor i in range({messages}):\n    w('4::flood %d\\n' % i)\n"
    started = time.monotonic()
    flood = client.execute(1, 1, sys.executable, ["-c", script], id=f"flood-{time.time_ns()}")
    flood.wait_started(60)
    flooded: dict[str, list[float]] = {"1:1": [], "1:2": []}
    while flood.noblock_get_next_result() is None:
        flooded["1:1"].append(ping(client, 1))
        flooded["1:2"].append(ping(client, 2))
    seconds = time.monotonic() - started
    slow = grid.redis.slowlog_get(1000)
    grid.redis.config_set("slowlog-log-slower-than", 10_000)
    logged = sum(1 for raw in grid.redis.lrange("ac:ctl:logs:1:1", 0, -1) if b"flood" in raw)
    return Flood(messages, quiet, flooded, seconds, max((entry["duration"] for entry in slow), default=0) / 1000,
                 len(slow), logged)


def grid() -> Grid:
    return Grid([AgentSpec(1, 1, config=FLOODING), AgentSpec(1, 2)], heartbeat_interval=2.0, log_level="WARNING")


def measure(messages: int = 1_000_000) -> list[Row]:
    with grid() as running:
        flood = run_flood(running, messages)
    rows = []
    for agent, role in (("1:1", "the flooding agent"), ("1:2", "a bystander")):
        for name, fraction in (("p50", 0.5), ("p99", 0.99)):
            rows.append(Row(f"ping {name} of {role} while {messages:,} messages flood the controller",
                            1000 * percentile(flood.flooded[agent], fraction), "ms",
                            1000 * percentile(flood.quiet[agent], fraction), f"its quiet {name}, same run",
                            "<= 2x quiet" if name == "p99" else "", higher_is_better=False))
    rows.append(Row(f"longest Redis call during the flood ({flood.slow_calls} over {SLOW_CALL_US / 1000:g} ms)",
                    flood.slowest_call_ms, "ms", None, "", "a few ms", higher_is_better=False))
    rows.append(Row("flood messages through the controller", flood.messages / flood.seconds, "msg/s", None,
                    f"{flood.seconds:.1f} s for {flood.messages:,}", ""))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages the job prints (default 1 M)")
    options = parser.parse_args(argv)
    print_table(measure(options.messages))


if __name__ == "__main__":
    main()
