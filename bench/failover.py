"""What a failover of the bus costs: SIGKILL the master while commands flow, and count what each command got.

    python -m bench.failover [--commands 5000] [--clients 4] [--window 50] [--down-after 2.0]

A Sentinel grid (``ac-grid --sentinel``: a master, a replica, three sentinels on loopback ports), one
controller and two agents holding role ``load``. ``--clients`` threads, each with its own ``acclient.Client``
on the Sentinel address, send ``ping`` by role with up to ``--window`` commands outstanding each, and wait
for every result. Once 40 % of the commands are sent, the master is killed (SIGKILL) and the sentinels fail
it over to the replica. Counted per command id: the answer it got (``SUCCESS``, an ``ERROR`` and its reason,
``CommandLost`` and why, or none at all), and the results of it left on the bus beyond the one its client
popped (duplicated), each with its reason.

It runs twice, in the same run: as Redis replicates by default (asynchronously), and with
``wait_replicas = 1`` (agents and clients confirm each write with ``WAIT 1``), which closes the gap a
failover can open; beside each, the commands per second before the kill, which is what ``WAIT`` costs.
"""

import argparse
import collections
import itertools
import json
import threading
import time
from dataclasses import dataclass, field

import acclient
from acgrid.launcher import AgentSpec, Grid
from acgrid.sentinel import DOWN_AFTER
from protocol import keys
from protocol.states import State

#: Seconds a client waits for one answer: far longer than a failover plus the client's loss grace.
ANSWER_TIMEOUT = 90.0
#: The share of the commands sent before the master is killed.
KILL_AT = 0.4
FAST = {"agents": {"sweep_interval": 0.1}, "routing": {"takeover_after": 1.0}}
NO_ANSWER = "no answer (left waiting)"


@dataclass
class Outcome:
    """What one run measured."""

    mode: str
    commands: int
    rate: float = 0.0  # commands answered per second before the kill
    sentinel_seconds: float = 0.0  # from the kill until the sentinels named the new master
    failover_seconds: float = 0.0  # from the kill until the first command sent after it was answered
    rejoined_seconds: float = 0.0  # from the kill until the old master, started again, followed the new one
    answers: collections.Counter[str] = field(default_factory=collections.Counter)  # answer -> commands
    duplicated: collections.Counter[str] = field(default_factory=collections.Counter)  # reason -> extra results
    left_waiting: list[str] = field(default_factory=list)  # ids of the commands no answer came for

    @property
    def lost(self) -> int:
        """Commands whose answer was not their result (each has its reason in ``answers``)."""
        return self.commands - self.answers[State.SUCCESS]

    def lines(self) -> list[str]:
        lost = ", ".join(f"{count} {answer}" for answer, count in sorted(self.answers.items())
                         if answer != State.SUCCESS and count) or "none"
        duplicated = ", ".join(f"{count} {reason}" for reason, count in sorted(self.duplicated.items())) or "none"
        return [f"{self.mode}: {self.commands} commands, {self.rate:,.0f} answered per second before the kill",
                f"  failover: the sentinels named a new master {self.sentinel_seconds:.2f} s after the kill; "
                f"commands routed again {self.failover_seconds:.2f} s after it; the old master, started again, "
                f"followed the new one {self.rejoined_seconds:.2f} s after it",
                f"  lost: {self.lost} ({lost})",
                f"  duplicated: {sum(self.duplicated.values())} ({duplicated})",
                *([f"  left waiting: {', '.join(self.left_waiting)}"] if self.left_waiting else [])]


class _Flow:
    """The commands of one run, from several client threads, and when each was sent and answered."""

    def __init__(self, grid: Grid, commands: int, clients: int, window: int, wait_replicas: int) -> None:
        self.grid = grid
        self.commands = commands
        self.clients = clients
        self.window = window
        self.options = {"wait_replicas": wait_replicas} if wait_replicas else {}
        self.answers: dict[str, tuple[str, float]] = {}  # id -> (answer, when)
        self.sent_at: dict[str, float] = {}
        self.kill_now = threading.Event()
        self._sent = itertools.count(1)
        self._lock = threading.Lock()

    def run_client(self, index: int) -> None:
        client = self.grid.client(**self.options)
        share = self.commands // self.clients + (index < self.commands % self.clients)
        waiting: collections.deque[acclient.Cmd] = collections.deque()
        for number in range(share):
            started = time.monotonic()
            waiting.append(client.cmd(None, None, "ping", None, role="load", id=f"c{index}-{number}"))
            with self._lock:
                self.sent_at[waiting[-1].id] = started
                if next(self._sent) == int(self.commands * KILL_AT):
                    self.kill_now.set()
            if len(waiting) >= self.window:
                self._collect(waiting.popleft())
        while waiting:
            self._collect(waiting.popleft())

    def _collect(self, cmd: acclient.Cmd) -> None:
        try:
            job = cmd.get_next_result(ANSWER_TIMEOUT)
            answer = State.SUCCESS if job.state == State.SUCCESS else f"{job.state} ({job.data})"
        except acclient.CommandLost as exc:
            answer = "CommandLost (a failover lost it)" if exc.failover else "CommandLost (the bus lost its data)"
        except TimeoutError:
            answer = NO_ANSWER
        with self._lock:
            self.answers[cmd.id] = (answer, time.monotonic())


def run(commands: int = 5000, clients: int = 4, window: int = 50, wait_replicas: int = 0,
        down_after: float = DOWN_AFTER) -> Outcome:
    """One run: a Sentinel grid, commands flowing, the master SIGKILLed; what every command got."""
    agent_config = {"controllers": {"main": {"wait_replicas": wait_replicas}}} if wait_replicas else {}
    specs = [AgentSpec(1, nid, ("load",), agent_config) for nid in (1, 2)]
    mode = f"wait_replicas = {wait_replicas}" if wait_replicas else "default (asynchronous replication)"
    outcome = Outcome(mode, commands)
    with Grid(specs, sentinel=True, heartbeat_interval=0.5, controller_config=FAST, log_level="WARNING",
              sentinel_options={"down_after": down_after}) as grid:
        assert grid.topology is not None  # a Sentinel grid
        flow = _Flow(grid, commands, clients, window, wait_replicas)
        threads = [threading.Thread(target=flow.run_client, args=(index,), daemon=True) for index in range(clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        flow.kill_now.wait()
        killed_at = time.monotonic()
        old = grid.topology.kill_master()
        grid.topology.await_failover(old)
        outcome.sentinel_seconds = time.monotonic() - killed_at
        grid.topology.rejoin(old)  # as systemd would start it again: until then the new master has no replica
        outcome.rejoined_seconds = time.monotonic() - killed_at
        for thread in threads:
            thread.join()
        answered = list(flow.answers.items())
        outcome.rate = sum(when < killed_at for _, (_, when) in answered) / (killed_at - started)
        after = [when for command_id, (_, when) in answered if flow.sent_at[command_id] > killed_at]
        outcome.failover_seconds = min(after) - killed_at if after else float("nan")
        outcome.answers.update(answer for _, (answer, _) in answered)
        outcome.answers[NO_ANSWER] += commands - len(answered)
        outcome.left_waiting = sorted({*flow.sent_at} - {*flow.answers} |
                                      {command_id for command_id, (answer, _) in answered if answer == NO_ANSWER})
        outcome.duplicated.update(_duplicates(grid, list(flow.answers)))
    return outcome


def _duplicates(grid: Grid, ids: list[str]) -> collections.Counter[str]:
    """Results of each command still on the bus beyond the one its client popped, by why they are there."""
    routed = collections.Counter(json.loads(raw).get("id") for raw in grid.redis.lrange(keys.JOBLOG, 0, -1))
    with grid.redis.pipeline(transaction=False) as pipe:
        for command_id in ids:
            pipe.llen(keys.result_queue(command_id))
        extra = pipe.execute()
    reasons: collections.Counter[str] = collections.Counter()
    for command_id, count in zip(ids, extra, strict=True):
        if count:
            reasons["routed twice (a send whose reply the failover cut off, sent again)" if routed[command_id] > 1
                    else "pushed again (the failover undid a client's pop, or a drain)"] += count
    return reasons


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=5000, help="commands per run (default 5000)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--window", type=int, default=50, help="commands each client has outstanding (default 50)")
    parser.add_argument("--down-after", type=float, default=DOWN_AFTER,
                        help=f"seconds the sentinels wait before they judge the master down (default {DOWN_AFTER:g})")
    options = parser.parse_args(argv)
    for wait_replicas in (0, 1):
        outcome = run(options.commands, options.clients, options.window, wait_replicas, options.down_after)
        print("\n".join(outcome.lines()), flush=True)


if __name__ == "__main__":
    main()
