"""One agent floods the controller with log messages: its own answers and a bystander's still come, and every
message is accounted for. The latencies are printed figures (``python -m bench.flood`` measures them in full)."""

from bench.flood import grid, run_flood
from bench.latency import percentile

MESSAGES = 200_000


def test_a_flooding_agent_stalls_neither_itself_nor_its_neighbours():
    with grid() as running:
        flood = run_flood(running, MESSAGES)
        kept = running.redis.llen("ac:ctl:logs:1:1")
    for agent in ("1:1", "1:2"):
        quiet, flooded = flood.quiet[agent], flood.flooded[agent]
        print(f"agent {agent}: ping p50/p99 {1000 * percentile(quiet, 0.5):.2f}/{1000 * percentile(quiet, 0.99):.2f} "
              f"ms quiet, {1000 * percentile(flooded, 0.5):.2f}/{1000 * percentile(flooded, 0.99):.2f} ms during "
              f"the flood ({len(flooded)} pings)")
    print(f"{MESSAGES:,} messages in {flood.seconds:.1f} s; longest Redis call {flood.slowest_call_ms:.2f} ms "
          f"({flood.slow_calls} over 1 ms)")
    assert flood.flooded["1:1"] and flood.flooded["1:2"], "both agents answered while the flood went on"
    assert flood.logged == kept == 10_000, "the controller kept the newest agent_log_max messages of the flood"
