"""Every benchmark in one run, one table: each figure beside its limit, measured in the same run.

    python -m bench [--quick] [--only latency,client,throughput,fanout,rollout,agent,routing,flood,scale]

Each part starts the grid it needs (a private redis-server, controllers,
agents) and stops it before the next, so no part loads the machine while
another measures. The parts, and their own command lines for details:
``python -m bench.latency``, ``bench.client``, ``bench.throughput``, ``bench.fanout``,
``bench.rollout``, ``bench.agent``, ``bench.routing``, ``bench.flood``, ``bench.scale``. ``--quick``
uses smaller counts (a smoke run, figures less steady).
"""

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import psutil
import redis

from acgrid.redis_server import redis_server_version
from bench import agent, client, fanout, flood, latency, rollout, routing, scale, throughput
from bench.table import Row, print_table

PARTS: dict[str, tuple[Callable[..., list[Row]], dict, dict]] = {
    # name: (measure, full options, quick options)
    "latency": (latency.measure, {"count": 2000}, {"count": 2000}),
    "client": (client.measure, {}, {"count": 4000}),
    "throughput": (throughput.measure, {"count": 20_000, "agents": 4}, {"count": 5000, "agents": 4}),
    "fanout": (fanout.measure, {"rounds": 5}, {"rounds": 2}),
    "rollout": (rollout.measure, {}, {"agents": 200, "batch": 20, "rounds": 1}),
    "agent": (agent.measure, {}, {"jobs": 500, "messages": 200_000, "rounds": 1, "idle": 3.0}),
    "routing": (routing.measure, {}, {"count": 50_000}),
    "flood": (flood.measure, {"messages": 1_000_000}, {"messages": 200_000}),
    "scale": (scale.measure, {}, {"sizes": (1000,), "idle": 10.0, "pings": 100}),
}


def machine() -> str:
    return (f"{platform.node()}: {psutil.cpu_count()} cpus, {psutil.virtual_memory().total / 2**30:.0f} GB, "
            f"load {', '.join(f'{load:.1f}' for load in os.getloadavg())}; Python {platform.python_version()}, "
            f"redis-server {redis_server_version()}, redis-py {redis.__version__}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run")
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts to run (default: {','.join(PARTS)})")
    options = parser.parse_args(argv)
    chosen = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    print(machine())
    rows: list[Row] = []
    for name in chosen:
        measure, full, quick = PARTS[name]
        started = time.monotonic()
        print(f"{name} ...", end=" ", flush=True, file=sys.stderr)
        rows += measure(**(quick if options.quick else full))
        print(f"{time.monotonic() - started:.0f} s", file=sys.stderr)
    print_table(rows)


if __name__ == "__main__":
    main()
