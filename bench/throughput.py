"""End-to-end throughput of ``ping`` with many commands outstanding, against Celery.

    python -m bench.throughput [--count 20000] [--agents 4]

Ours: one controller, ``--agents`` agents holding role ``bench``; the client
queues every command first (role ``bench``, so each goes to the least busy
agent), then collects every result. Celery: the same work on the same
machine in the same run: a Redis broker and result backend, a no-op task,
one worker with ``--agents`` processes; every task sent first, then every
result collected. The controller's RSS is read while it works.
"""

import argparse
import json
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import psutil

from acgrid.launcher import AgentSpec, Grid
from acgrid.processes import spawn, stop_process
from acgrid.redis_server import RedisServer
from bench.table import Row, print_table
from protocol import keys

CHUNK = 1000


def ours(count: int, agents: int) -> tuple[float, float]:
    """(commands per second, controller RSS in MB at the end of the run)."""
    specs = [AgentSpec(1, nid, ("bench",)) for nid in range(1, agents + 1)]
    with Grid(specs, heartbeat_interval=2.0, log_level="WARNING") as grid:
        redis = grid.redis
        ids = [str(uuid.uuid4()) for _ in range(count)]
        commands = [json.dumps({"id": command_id, "role": "bench", "cmd": "ping", "args": {}, "data": ""})
                    for command_id in ids]
        controller = psutil.Process(grid.controllers[0].pid)
        started = time.perf_counter()
        for start in range(0, count, CHUNK):
            redis.rpush(keys.CMDS_QUEUE, *commands[start:start + CHUNK])
        rss = 0.0
        for start in range(0, count, CHUNK):
            with redis.pipeline(transaction=False) as pipe:
                for command_id in ids[start:start + CHUNK]:
                    pipe.blpop(keys.result_queue(command_id), timeout=60)
                replies = pipe.execute()
            assert all(reply is not None for reply in replies), "a result did not come"
            rss = max(rss, controller.memory_info().rss / 2**20)
        return count / (time.perf_counter() - started), rss


CELERY_APP = textwrap.dedent('''
    import os
    from celery import Celery

    app = Celery("bench", broker=os.environ["BENCH_BUS"], backend=os.environ["BENCH_BUS"])
    app.conf.update(worker_prefetch_multiplier=64, task_acks_late=False, result_expires=600)


    @app.task
    def noop():
        return None
''')


def celery(count: int, concurrency: int) -> float | None:
    """Tasks per second through Celery, or None when Celery is not installed (``pip install 'celery[redis]'``)."""
    try:
        import celery  # noqa: F401
    except ImportError:
        return None
    with tempfile.TemporaryDirectory(prefix="ac-bench-celery-") as folder:
        folder = Path(folder)
        (folder / "bench_app.py").write_text(CELERY_APP)
        server = RedisServer(folder / "redis", persistence=False)
        server.workdir.mkdir()
        server.start()
        env = {"BENCH_BUS": server.url, "PYTHONPATH": str(folder)}
        worker = spawn([sys.executable, "-m", "celery", "-A", "bench_app", "worker", "-c", str(concurrency),
                        "--pool", "prefork", "-l", "warning", "--without-gossip", "--without-mingle",
                        "--without-heartbeat"], folder / "worker.log", env)
        try:
            sys.path.insert(0, str(folder))
            import os

            os.environ["BENCH_BUS"] = server.url
            from bench_app import app, noop
            from celery.result import ResultSet

            _await_worker(app)
            started = time.perf_counter()
            results = ResultSet([noop.delay() for _ in range(count)])
            results.join_native(timeout=300)  # Celery's fast way to collect many results from Redis
            return count / (time.perf_counter() - started)
        finally:
            sys.path.remove(str(folder))
            stop_process(worker)
            server.stop()


def _await_worker(app) -> None:
    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5):
        if time.monotonic() > deadline:
            raise TimeoutError("the Celery worker did not start")


def measure(count: int, agents: int) -> list[Row]:
    rate, rss = ours(count, agents)
    theirs = celery(count, agents)
    rows = [Row(f"ping end to end, pipelined ({count} outstanding, 1 000 per RPUSH), 1 controller, {agents} agents",
                rate, "cmd/s",
                theirs, f"Celery: Redis broker+backend, no-op task, {agents} worker processes"
                if theirs else "Celery not installed: pip install 'celery[redis]'", ">= 10,000/s and >= 3x Celery"),
            Row("controller RSS under that load", rss, "MB", None, "", "")]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="commands (default 20000)")
    parser.add_argument("--agents", type=int, default=4, help="agents, and Celery worker processes (default 4)")
    options = parser.parse_args(argv)
    print_table(measure(options.count, options.agents))


if __name__ == "__main__":
    main()
