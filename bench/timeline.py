"""Where a sequential ping's time goes, step by step, as it runs.

    python -m bench.timeline [--count 3000]

One grid (a private redis-server, one controller, one agent), its daemons
started with ``bench/timeline_hook`` on ``PYTHONPATH``: each notes the time of
every receive and send on its sockets. This process sends ``--count``
sequential pings through ``acclient`` and notes when each ``client.cmd``
starts and returns, and when its result is read. For the pings whose steps
came in the most common order, it prints the median time from each step to
the next. Unlike ``MONITOR`` on the bus (which slows Redis), this costs
each process about a microsecond a step.
"""

import argparse
import bisect
import collections
import os
import statistics
import tempfile
import time
from pathlib import Path

from acgrid.launcher import AgentSpec, Grid

WARMUP = 300
HOOK = Path(__file__).with_name("timeline_hook")

#: One step: (time in ns, process, what happened, bytes).
Step = tuple[int, str, str, int]


def run_pings(count: int, notes: Path) -> list[tuple[int, int, int]]:
    """The pings' client-side times (cmd called, cmd returned, result read), the daemons noting theirs."""
    saved = {name: os.environ.get(name) for name in ("AC_TIMELINE", "PYTHONPATH")}
    os.environ["AC_TIMELINE"] = str(notes)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOOK), saved["PYTHONPATH"]]))
    try:
        with Grid([AgentSpec(1, 1)], heartbeat_interval=2.0, log_level="WARNING") as grid:
            client = grid.client()
            clock, times = time.perf_counter_ns, []
            for index in range(WARMUP + count):
                called = clock()
                cmd = client.cmd(1, 1, "ping", None)
                returned = clock()
                assert cmd.get_next_result(30).state == "SUCCESS"
                if index >= WARMUP:
                    times.append((called, returned, clock()))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return times


def read_notes(folder: Path, prefix: str) -> list[Step]:
    steps = []
    for path in folder.glob(f"{prefix}.*"):
        for line in path.read_text().splitlines():
            at, process, kind, size = line.split()
            steps.append((int(at), process, kind, int(size)))
    return sorted(steps)


def timeline(times: list[tuple[int, int, int]], steps: list[Step]) -> tuple[int, list[tuple[str, float]]]:
    """How many pings took the most common order of steps, and for each step of that order its label and
    the median microseconds since the step before."""
    starts = [step[0] for step in steps]
    by_order: dict[tuple, list[list[int]]] = collections.defaultdict(list)
    for called, returned, read in times:
        inside = steps[bisect.bisect_left(starts, called):bisect.bisect_right(starts, read)]
        ping = [(called, "client", "cmd() called", 0), (returned, "client", "cmd() returned", 0), *inside,
                (read, "client", "result read", 0)]
        ping.sort()
        order = tuple((process, kind) for _, process, kind, _ in ping)
        by_order[order].append([at for at, *_ in ping] + [size for *_, size in ping])
    order, pings = max(by_order.items(), key=lambda item: len(item[1]))
    width = len(order)
    rows = []
    for index, (process, kind) in enumerate(order):
        size = statistics.median(ping[width + index] for ping in pings)
        label = f"{process} {kind}" + (f" ({size:.0f} B)" if size else "")
        gap = 0.0 if index == 0 else statistics.median(ping[index] - ping[index - 1] for ping in pings) / 1000
        rows.append((label, gap))
    return len(pings), rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.timeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="sequential pings (default 3000)")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ac-timeline-") as folder:
        times = run_pings(options.count, Path(folder) / "notes")
        steps = read_notes(Path(folder), "notes")
    if not steps:
        raise SystemExit("the daemons noted nothing: is bench/timeline_hook on their PYTHONPATH?")
    taken, rows = timeline(times, steps)
    round_trip = statistics.median(read - called for called, _, read in times) / 1000
    print(f"{options.count} sequential pings, median round trip {round_trip:.0f} us; the {taken} pings "
          f"({100 * taken / len(times):.0f} %) whose steps came in the most common order:")
    print(f"{'step':48s} {'us since the step before':>26s}")
    for label, gap in rows:
        print(f"{label:48s} {gap:26.1f}")


if __name__ == "__main__":
    main()
