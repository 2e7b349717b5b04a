"""What a program that uses ``acclient`` gets: commands sent one call each, by one and by 4 client processes.

    python -m bench.client [--count 20000] [--agents 4] [--clients 4]

One grid (a private redis-server, one controller, ``--agents`` agents with
role ``bench``). Each regime sends ``--count`` pings and collects every result,
and reports its rate beside a limit measured in the same run, and the CPU each
process spent per command (from ``/proc``, over the regime):

* one client, one call per command: every command sent with ``client.cmd``,
  then every result taken with ``Cmd.get_next_result``. The limit: the client
  alone, a raw ``RPUSH`` per command of the same JSON and an ``LPOP`` per
  result already waiting.
* ``--clients`` client processes doing the same, each its share. The limit:
  as many processes doing the raw part.
* one client, in one call (``Client.submit``), results across the commands
  (``Client.iter_results``).
* pipelined, as ``bench.throughput`` measures (1 000 commands per ``RPUSH``,
  the results popped in pipelines): the controller's own batching, which no
  program reaches by calling ``client.cmd``.

Also ``client.cmd`` alone, beside a raw ``RPUSH`` of the JSON it sends (on a
bus with no controller, so nothing else runs).
"""

import argparse
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psutil
import redis

import acclient
from acgrid.launcher import AgentSpec, Grid
from acgrid.redis_server import RedisServer
from bench.table import Row, print_table
from protocol import keys

ROLE = "bench"
ROUNDS = 5
GO = "bench:client:go"


@dataclass
class Cpu:
    """CPU seconds of the grid's processes over a span: controller, agents (all), redis-server."""

    controller: float
    agents: float
    redis: float


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


class Meter:
    """CPU of the grid's processes between ``start()`` and ``stop()``."""

    def __init__(self, grid: Grid) -> None:
        self.controller = psutil.Process(grid.controllers[0].pid)
        self.agents = [psutil.Process(process.pid) for process in grid.agents.values()]
        self.redis = psutil.Process(grid.redis_server.process.pid)
        self._start = self._read()

    def _read(self) -> Cpu:
        return Cpu(cpu_seconds(self.controller), sum(cpu_seconds(agent) for agent in self.agents),
                   cpu_seconds(self.redis))

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> Cpu:
        now = self._read()
        return Cpu(now.controller - self._start.controller, now.agents - self._start.agents,
                   now.redis - self._start.redis)


def ping_json() -> str:
    return json.dumps({"id": str(uuid.uuid4()), "role": ROLE, "cmd": "ping", "args": {}, "data": ""})


def one_call_each(client: acclient.Client, count: int) -> None:
    """Send ``count`` pings with ``client.cmd``, one call each, then take each result."""
    cmds = [client.cmd(None, None, "ping", None, role=ROLE) for _ in range(count)]
    for cmd in cmds:
        job = cmd.get_next_result(timeout=120)
        assert job.state == "SUCCESS", job.data


def in_one_call(client: acclient.Client, count: int) -> None:
    """Send ``count`` pings in one ``Client.submit``, then take the results across them."""
    cmds = client.submit([{"gid": None, "nid": None, "cmd": "ping", "role": ROLE}] * count)
    states = [job.state for job in client.iter_results(cmds, timeout=120)]
    assert states == ["SUCCESS"] * count, set(states)


def raw_alone(bus: redis.Redis, count: int) -> None:
    """The client's part alone: an ``RPUSH`` per command of its JSON, an ``LPOP`` per waiting result."""
    queue, results = f"bench:client:{uuid.uuid4()}", f"bench:client:{uuid.uuid4()}:results"
    answer = json.dumps({"id": "x", "state": "SUCCESS", "data": "pong"})
    with bus.pipeline(transaction=False) as pipe:
        for start in range(0, count, 1000):
            pipe.rpush(results, *[answer] * min(1000, count - start))
        pipe.execute()
    for _ in range(count):
        bus.rpush(queue, ping_json())
    for _ in range(count):
        assert bus.lpop(results) is not None
    bus.delete(queue)


def worker(url: str, regime: str, count: int) -> None:
    """One client process: wait for the go, run ``regime``, print its seconds and CPU seconds."""
    bus = redis.Redis.from_url(url)
    client = acclient.Client.from_url(url)
    bus.blpop(GO, timeout=120)
    started, cpu = time.perf_counter(), time.process_time()
    if regime == "raw":
        raw_alone(bus, count)
    else:
        one_call_each(client, count)
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))


def in_processes(url: str, regime: str, count: int, processes: int) -> tuple[float, float]:
    """Run ``regime`` in ``processes`` client processes at once, ``count`` commands in all: (seconds, client
    CPU seconds in all)."""
    workers = [subprocess.Popen([sys.executable, "-m", "bench.client", "--worker", url, regime,
                                 str(count // processes)], stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    bus = redis.Redis.from_url(url)
    try:
        while bus.client_list() and sum(1 for c in bus.client_list() if c["cmd"] == "blpop") < processes:
            time.sleep(0.05)
        started = time.perf_counter()
        bus.rpush(GO, *["go"] * processes)
        reports = [json.loads(worker.communicate(timeout=600)[0]) for worker in workers]
        return time.perf_counter() - started, sum(report["cpu"] for report in reports)
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()


def timed(action: Callable[[], None]) -> tuple[float, float]:
    """(seconds, this process's CPU seconds) of ``action``."""
    started, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - started, time.process_time() - cpu


def cpu_note(cpu: Cpu, client_cpu: float, count: int, agents: int) -> str:
    per = 1e6 / count
    return (f"CPU per command: controller {cpu.controller * per:.0f} us, agents {cpu.agents * per:.0f} us "
            f"({cpu.agents * per / agents:.0f} each), redis {cpu.redis * per:.0f} us, "
            f"client {client_cpu * per:.0f} us")


def pipelined(grid: Grid, count: int) -> None:
    """As ``bench.throughput``: 1 000 commands per ``RPUSH``, results popped in pipelines of 1 000."""
    bus = grid.redis
    commands = [ping_json() for _ in range(count)]
    ids = [json.loads(command)["id"] for command in commands]
    for start in range(0, count, 1000):
        bus.rpush(keys.CMDS_QUEUE, *commands[start:start + 1000])
    for start in range(0, count, 1000):
        with bus.pipeline(transaction=False) as pipe:
            for command_id in ids[start:start + 1000]:
                pipe.blpop(keys.result_queue(command_id), timeout=120)
            assert all(pipe.execute()), "a result did not come"


def regimes(grid: Grid, count: int, clients: int) -> Iterator[Row]:
    agents = len(grid.agents)
    meter, client = Meter(grid), grid.client()
    one_call_each(client, 500)  # warm-up: scripts loaded, every agent seen
    url = grid.address.url

    raw_seconds, _ = timed(lambda: raw_alone(grid.redis, count))
    meter.start()
    seconds, client_cpu = timed(lambda: one_call_each(client, count))
    yield Row(f"1 client, one call per command ({count} pings; {cpu_note(meter.stop(), client_cpu, count, agents)})",
              count / seconds, "cmd/s", count / raw_seconds, "the client alone: RPUSH each, LPOP each")

    raw_seconds, _ = in_processes(url, "raw", count, clients)
    meter.start()
    seconds, client_cpu = in_processes(url, "acclient", count, clients)
    yield Row(f"{clients} client processes, one call per command "
              f"({cpu_note(meter.stop(), client_cpu, count, agents)})", count / seconds, "cmd/s",
              count / raw_seconds, f"{clients} processes alone: RPUSH each, LPOP each")

    if hasattr(acclient.Client, "submit"):
        meter.start()
        seconds, client_cpu = timed(lambda: in_one_call(client, count))
        yield Row(f"1 client, Client.submit of all, Client.iter_results across them "
                  f"({cpu_note(meter.stop(), client_cpu, count, agents)})", count / seconds, "cmd/s")

    meter.start()
    seconds, client_cpu = timed(lambda: pipelined(grid, count))
    yield Row(f"pipelined: 1 000 commands per RPUSH ({cpu_note(meter.stop(), client_cpu, count, agents)})",
              count / seconds, "cmd/s")


def cmd_alone(count: int) -> Row:
    """``client.cmd`` against a raw ``RPUSH`` of the JSON it sends, on a bus that only takes them in."""
    with RedisServer(persistence=False) as server:
        client, bus = acclient.Client.from_url(server.url), redis.Redis.from_url(server.url)
        for _ in range(200):
            client.cmd(1, 1, "ping", None)
        sent = json.loads(bus.lindex(keys.CMDS_QUEUE, -1))
        raw = json.dumps({key: value for key, value in sent.items() if key != "queued"})
        each = count // ROUNDS
        raws, cmds = [], []
        for _ in range(ROUNDS):  # alternated, the best of each: the least disturbed by the rest of the machine
            raws.append(timed(lambda: [bus.rpush(keys.CMDS_QUEUE, raw) for _ in range(each)]))
            cmds.append(timed(lambda: [client.cmd(1, 1, "ping", None) for _ in range(each)]))
            bus.delete(keys.CMDS_QUEUE)
    (raw_seconds, raw_cpu), (seconds, cpu) = min(raws, key=lambda pair: pair[1]), min(cmds, key=lambda pair: pair[1])
    return Row(f"client.cmd alone: client CPU per call (best of {ROUNDS} rounds of {each}; {1e6 * seconds / each:.0f}"
               f" us each on the clock, raw RPUSH {1e6 * raw_seconds / each:.0f} us)", 1e6 * cpu / each, "us",
               1e6 * raw_cpu / each, "raw RPUSH of the same JSON, redis-py", "<= 1.3x", higher_is_better=False,
               as_multiple=True)


def measure(count: int = 20_000, agents: int = 4, clients: int = 4) -> list[Row]:
    rows = [cmd_alone(count)]
    specs = [AgentSpec(1, nid, (ROLE,)) for nid in range(1, agents + 1)]
    with Grid(specs, heartbeat_interval=2.0, log_level="WARNING") as grid:
        rows += list(regimes(grid, count, clients))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="commands per regime (default 20000)")
    parser.add_argument("--agents", type=int, default=4, help="agents (default 4)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--worker", nargs=3, metavar=("URL", "REGIME", "COUNT"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        url, regime, count = options.worker
        worker(url, regime, int(count))
        return
    print_table(measure(options.count, options.agents, options.clients))


if __name__ == "__main__":
    main()
