"""Round trip of ``ping`` through ``acclient``, against raw Redis wake-ups.

    python -m bench.latency [--count 2000]

A ping crosses four hops, each a process woken by Redis: client -> controller
(``BLMOVE`` on ``cmds_queue``), controller -> agent (``BLMOVE`` on its queue),
agent -> controller (the outbox bell), controller -> client (``BLPOP``). The
limit is one raw ``BLPOP`` wake-up, measured in the same run between this
process and an echo process, times those four hops.
"""

import argparse
import statistics
import subprocess
import sys
import time

import redis

from acgrid.launcher import AgentSpec, Grid
from bench.table import Row, print_table

HOPS = 4
WARMUP = 200


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def echo(url: str) -> None:
    """The echo side of the raw measurement: BLPOP one list, RPUSH another."""
    client = redis.Redis.from_url(url)
    while True:
        _, value = client.blpop("bench:ping")
        if value == b"stop":
            return
        client.rpush("bench:pong", value)


def raw_wakeups(url: str, count: int) -> list[float]:
    """One BLPOP wake-up per sample: half a round trip to an echo process."""
    echoer = subprocess.Popen([sys.executable, "-m", "bench.latency", "--echo", url])
    client = redis.Redis.from_url(url)
    samples = []
    try:
        for index in range(count + WARMUP):
            started = time.perf_counter()
            client.rpush("bench:ping", "x")
            client.blpop("bench:pong", timeout=30)
            if index >= WARMUP:
                samples.append((time.perf_counter() - started) / 2)
    finally:
        client.rpush("bench:ping", "stop")
        echoer.wait(30)
    return samples


def ping_round_trips(grid: Grid, count: int) -> list[float]:
    client = grid.client()
    samples = []
    for index in range(count + WARMUP):
        started = time.perf_counter()
        job = client.cmd(1, 1, "ping", None).get_next_result(30)
        if index >= WARMUP:
            samples.append(time.perf_counter() - started)
        assert job.state == "SUCCESS"
    return samples


def measure(count: int) -> list[Row]:
    with Grid([AgentSpec(1, 1)], heartbeat_interval=2.0, log_level="WARNING") as grid:
        wakeups = raw_wakeups(grid.bus_url, count)
        pings = ping_round_trips(grid, count)
    rows = []
    for name, fraction, aim in (("p50", 0.50, "<= 1 ms"), ("p99", 0.99, "<= 5 ms")):
        rows.append(Row(f"ping round trip {name} (acclient, {count} sequential)", 1000 * percentile(pings, fraction),
                        "ms", 1000 * HOPS * percentile(wakeups, fraction),
                        f"{HOPS} hops x raw BLPOP wake-up {name}", aim, higher_is_better=False))
    rows.append(Row("ping round trip mean", 1000 * statistics.mean(pings), "ms",
                    1000 * HOPS * statistics.mean(wakeups), f"{HOPS} x raw wake-up mean", "",
                    higher_is_better=False))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="sequential pings (default 2000)")
    parser.add_argument("--echo", metavar="URL", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.echo:
        echo(options.echo)
        return
    print_table(measure(options.count))


if __name__ == "__main__":
    main()
