"""A rollout of ``ping`` to 1 000 agents in waves, beside a plain fanout to the same agents, in the same run.

    python -m bench.rollout [--agents 1000] [--batch 100] [--rounds 3]

One grid: a private redis-server, one controller, ``--agents`` swarm
identities holding role ``rollout``. Each round sends a plain fanout, then a
rollout (waves of ``--batch``, no wait between them, no error allowed), and
reads the controller's CPU time (``/proc``) over each until all of its
results are in. Reported: the controller's CPU per target of each (the
median of ``--rounds``), and each one's time until the last result.
"""

import argparse
import statistics
import time

import psutil

from acgrid.launcher import AgentSpec, Grid
from bench.client import cpu_seconds
from bench.table import Row, print_table

ROLE = "rollout"


def one(grid: Grid, controller: psutil.Process, agents: int, **rollout: object) -> tuple[float, float]:
    """(controller CPU seconds, wall seconds) of one fanout (a rollout if ``rollout`` is given) to every agent."""
    client = grid.client()
    cpu, started = cpu_seconds(controller), time.perf_counter()
    cmd = client.cmd(None, None, "ping", None, role=ROLE, fanout=True, rollout=rollout or None)
    states = [job.state for job in cmd.iter_results(timeout=300)]
    elapsed = time.perf_counter() - started
    assert states.count("SUCCESS") == agents, f"{states.count('SUCCESS')} of {agents} answered"
    return cpu_seconds(controller) - cpu, elapsed


def measure(agents: int = 1000, batch: int = 100, rounds: int = 3, per_process: int = 500) -> list[Row]:
    specs = [AgentSpec(1, first + 1, (ROLE,), swarm=min(per_process, agents - first))
             for first in range(0, agents, per_process)]
    with Grid(specs, heartbeat_interval=5.0, log_level="WARNING") as grid:
        controller = psutil.Process(grid.controllers[0].pid)
        one(grid, controller, agents)  # warm-up
        plain, waves = [], []
        for _ in range(rounds):
            plain.append(one(grid, controller, agents))
            waves.append(one(grid, controller, agents, batch=batch, wait=0, max_errors=0))
    plain_cpu = statistics.median(cpu for cpu, _ in plain) / agents
    waves_cpu = statistics.median(cpu for cpu, _ in waves) / agents
    return [
        Row(f"controller CPU per target, rollout to {agents} agents in waves of {batch} (median of {rounds}; "
            f"all in after {statistics.median(wall for _, wall in waves):.2f} s)", 1e6 * waves_cpu, "us",
            1e6 * plain_cpu, f"plain fanout to the same agents (all in after "
                             f"{statistics.median(wall for _, wall in plain):.2f} s)", higher_is_better=False),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000, help="agents (default 1000)")
    parser.add_argument("--batch", type=int, default=100, help="targets per wave (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    options = parser.parse_args(argv)
    print_table(measure(options.agents, options.batch, options.rounds))


if __name__ == "__main__":
    main()
