"""How fast one controller moves commands from ``cmds_queue`` into agent queues.

    python -m bench.routing [--count 200000] [--agents 4] [--batch-size 256]

A private redis-server is started; agents are only registered (a registration
and a heartbeat key each), so nobody consumes their queues and the figure is
the controller's alone. The commands are queued first, then one real
controller process is started; the clock runs from the first command it takes
to the last one in an agent queue. Redis commands are counted with
``INFO commandstats`` (commands run inside scripts included), less the ones
this benchmark sends itself.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis
import tomli_w

from acbus.address import BusAddress
from acgrid.processes import spawn, stop_process
from acgrid.redis_server import RedisServer
from bench.table import Row
from protocol import keys

AIM = 20_000  # commands per second, from the issue
POLL = 0.005


@dataclass(frozen=True)
class Routed:
    count: int
    agents: int
    seconds: float
    redis_calls: dict[str, int]  # Redis commands by name, scripts' inner calls included
    controller_cpu: float
    redis_cpu: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


def route(count: int = 200_000, agents: int = 4, batch_size: int = 256) -> Routed:
    """Queue ``count`` commands on a private redis-server, start a controller, time it routing them."""
    with tempfile.TemporaryDirectory(prefix="ac-bench-") as folder:
        server = RedisServer(Path(folder) / "redis", persistence=False)
        server.workdir.mkdir()
        server.start()
        try:
            bus = redis.Redis(**BusAddress.from_url(server.url).redis_kwargs())
            register_agents(bus, agents)
            queue_commands(bus, count)
            bus.config_resetstat()
            redis_process = psutil.Process(server.process.pid)
            redis_cpu = cpu_seconds(redis_process)
            controller = start_controller(server.url, Path(folder), batch_size)
            try:
                started, finished, polls = wait_until_routed(bus, count, agents)
                controller_cpu = cpu_seconds(psutil.Process(controller.pid))
                redis_cpu = cpu_seconds(redis_process) - redis_cpu
            finally:
                stop_process(controller)
            calls = command_calls(bus)
        finally:
            server.stop()
    calls["llen"] -= polls
    calls.pop("info", None)
    return Routed(count, agents, finished - started, calls, controller_cpu, redis_cpu)


def measure(count: int = 200_000, agents: int = 4, batch_size: int = 256) -> list[Row]:
    routed = route(count, agents, batch_size)
    return [Row(f"controller alone: routing {count:,} queued commands to {agents} agents (role)", routed.per_second,
                "cmd/s", aim=f">= {AIM:,}/s"),
            Row("controller CPU per routed command", routed.controller_cpu / count * 1e6, "us",
                higher_is_better=False)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000, help="commands to route")
    parser.add_argument("--agents", type=int, default=4, help="registered agents (all hold the role)")
    parser.add_argument("--batch-size", type=int, default=256, help="[routing] batch_size of the controller")
    options = parser.parse_args(argv)
    routed = route(options.count, options.agents, options.batch_size)
    count = options.count
    print(f"routed {count} commands to {options.agents} agents (role, least busy) in {routed.seconds:.2f} s")
    print(f"  {routed.per_second:,.0f} commands/s   (aim: >= {AIM:,}/s)")
    print(f"  {sum(routed.redis_calls.values()) / count:.2f} Redis commands per routed command, scripts' inner "
          "calls included:")
    for name, calls in sorted(routed.redis_calls.items(), key=lambda item: -item[1]):
        if calls / count >= 0.005:
            print(f"    {name:<10} {calls / count:.3f}")
    print(f"  CPU per routed command: controller {routed.controller_cpu / count * 1e6:.1f} us "
          f"(its start-up included), redis-server {routed.redis_cpu / count * 1e6:.1f} us")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def register_agents(bus: redis.Redis, count: int) -> None:
    for nid in range(1, count + 1):
        registration = {"gid": 1, "nid": nid, "roles": ["work"], "heartbeat_interval": 3600}
        bus.hset(keys.AGENTS, keys.agent_name(1, nid), json.dumps(registration))
        bus.set(keys.AgentKeys(1, nid).alive, "1", ex=3 * 3600)


def queue_commands(bus: redis.Redis, count: int) -> None:
    pipe = bus.pipeline(transaction=False)
    for index in range(count):
        command = {"id": str(uuid.uuid4()), "gid": None, "nid": None, "role": "work", "fanout": False,
                   "cmd": "execute", "args": {"name": "true", "max_time": 10}, "data": ""}
        pipe.rpush(keys.CMDS_QUEUE, json.dumps(command))
        if index % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def start_controller(url: str, folder: Path, batch_size: int) -> subprocess.Popen:
    config = folder / "controller.toml"
    config.write_text(tomli_w.dumps({"bus": {"url": url}, "routing": {"batch_size": batch_size}}))
    return spawn([sys.executable, "-m", "controller", "-c", str(config), "--log-level", "WARNING"],
                 folder / "controller.log")


def wait_until_routed(bus: redis.Redis, count: int, agents: int) -> tuple[float, float, int]:
    """(time of the first command taken, time the last was queued for an agent, LLEN calls made)."""
    polls = 0
    started = None
    queues = [keys.AgentKeys(1, nid).commands for nid in range(1, agents + 1)]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        waiting = bus.llen(keys.CMDS_QUEUE)
        polls += 1
        now = time.monotonic()
        if started is None and waiting < count:
            started = now
        if waiting == 0:
            pipe = bus.pipeline(transaction=False)
            for queue in queues:
                pipe.llen(queue)
            routed = sum(pipe.execute())
            polls += len(queues)
            if routed == count:
                return started, time.monotonic(), polls
        time.sleep(POLL)
    raise SystemExit("the controller did not route everything within 600 s")


def command_calls(bus: redis.Redis) -> dict[str, int]:
    stats = bus.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in stats.items()}


if __name__ == "__main__":
    main()
