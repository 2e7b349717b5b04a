"""The benchmark harness runs: a small fanout through swarm agents (and the same pings as a program's own list), the
scale and timeline benchmarks, and the one-table runner's options."""

import subprocess
import sys

from bench import fanout, scale
from bench.table import print_table


def test_a_small_fanout_benchmark_hears_every_swarm_agent(capsys):
    rows = fanout.measure(sizes=(3, 7), rounds=1, per_process=4)  # 7 agents: two swarm processes
    assert [row.figure.split(",")[0] for row in rows] == ["fanout ping to 3 agents", "3 pings of a program's own",
                                                          "fanout ping to 7 agents", "7 pings of a program's own"]
    assert all(row.result > 0 and row.limit > 0 for row in rows)
    print_table(rows)
    assert "fanout ping to 7 agents" in capsys.readouterr().out


def test_the_scale_benchmark_measures_each_figure_beside_its_limit():
    rows = scale.measure(sizes=(40,), per_process=20, idle=2.0, pings=10)
    figures = {row.figure.split(" at N=")[0].split(" (")[0]: row for row in rows}
    assert figures["connections of one ac-agent"].result == 2
    assert figures["connections per swarm identity"].result == (40 + 2) / 40, "an intake each, one shared per process"
    assert figures["role ping p50"].result > 0 and figures["role ping p50"].limit > 0
    idle = next(row for name, row in figures.items() if name.startswith("idle Redis ops"))
    assert idle.result >= idle.limit > 0, "every heartbeat is a Redis call"
    assert figures["registering 40 agents at once, until the controller announced each"].result > 0


def test_the_runner_refuses_an_unknown_part():
    refused = subprocess.run([sys.executable, "-m", "bench", "--only", "latency,speed"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "unknown part(s) speed" in refused.stderr


def test_the_timeline_notes_every_process_on_a_pings_path():
    run = subprocess.run([sys.executable, "-m", "bench.timeline", "--count", "50"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    steps = [line.rsplit(None, 1)[0] for line in run.stdout.splitlines()[2:]]
    assert steps[0] == "client cmd() called" and steps[-1] == "client result read"
    for step in ("controller recv", "controller send", "agent recv", "agent send"):
        assert any(line.startswith(step) for line in steps), f"no '{step}' step in {steps}"
