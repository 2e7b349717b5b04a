"""The benchmark harness runs: a small fanout through swarm agents, and the one-table runner's options."""

import subprocess
import sys

from bench import fanout
from bench.table import print_table


def test_a_small_fanout_benchmark_hears_every_swarm_agent(capsys):
    rows = fanout.measure(sizes=(3, 7), rounds=1, per_process=4)  # 7 agents: two swarm processes
    assert [row.figure.split(",")[0] for row in rows] == ["fanout ping to 3 agents", "fanout ping to 7 agents"]
    assert all(row.result > 0 and row.limit > 0 for row in rows)
    print_table(rows)
    assert "fanout ping to 7 agents" in capsys.readouterr().out


def test_the_runner_refuses_an_unknown_part():
    refused = subprocess.run([sys.executable, "-m", "bench", "--only", "latency,speed"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "unknown part(s) speed" in refused.stderr
