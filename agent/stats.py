"""Job stats: cpu and memory of each running job, plus the statsd values it reports.

While jobs run, every ``SAMPLE_INTERVAL`` seconds each job's process group
is sampled (cpu %, rss, vms, swap, summed over the group's processes). Each
job's samples and statsd values are aggregated and flushed to the
controllers every ``stats_interval`` (the job's own, or ``[stats] interval``)
as a ``stats`` envelope. With no job running nothing wakes up.

Aggregation over one flush interval: ``cpu`` is the mean of the samples,
``rss``/``vms``/``swap`` the highest; statsd values as in ``StatsdAggregate``.
"""

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import psutil
import trio

from agent.outbox import Outbox
from protocol import envelope
from protocol.command import Command
from protocol.errors import ProtocolError, shown
from protocol.statsd import StatsdSample, parse_statsd

log = logging.getLogger(__name__)

#: Seconds between two samples of a running job.
SAMPLE_INTERVAL = 2.0
#: Distinct values a statsd set keeps per interval (more are counted, not stored).
MAX_SET_SIZE = 10_000
#: Statsd keys per job; samples of further keys are refused with a warning.
MAX_STATSD_KEYS = 1000


class StatsdAggregate:
    """The statsd values of one job over one flush interval.

    ``g`` gauge: last value (``+N``/``-N`` adjust it), kept across intervals;
    ``c`` counter: sum over the interval; ``ms`` timer: mean over the interval
    (with ``count``); ``s`` set: number of distinct values; ``kv``: last value,
    kept across intervals.
    """

    def __init__(self) -> None:
        self._types: dict[str, str] = {}
        self._gauges: dict[str, float] = {}
        self._kv: dict[str, str] = {}
        self._counters: dict[str, float] = {}
        self._timers: dict[str, list[float]] = {}
        self._sets: dict[str, set[str]] = {}

    def add(self, sample: StatsdSample) -> None:
        key, kind = sample.key, sample.type
        known = self._types.get(key)
        if known is None:
            if len(self._types) >= MAX_STATSD_KEYS:
                raise ProtocolError("statsd", f"more than {MAX_STATSD_KEYS} keys: {shown(key)} ignored")
            self._types[key] = kind
        elif known != kind:
            raise ProtocolError("statsd", f"{shown(key)} is a {known!r} stat, got type {kind!r}")
        # parse_statsd gives g, c and ms samples a number, s and kv samples their text
        if kind == "g":
            number = cast(float, sample.value)
            self._gauges[key] = self._gauges.get(key, 0.0) + number if sample.relative else number
        elif kind == "c":
            self._counters[key] = self._counters.get(key, 0.0) + cast(float, sample.value)
        elif kind == "ms":
            timer = self._timers.setdefault(key, [0.0, 0])
            timer[0] += cast(float, sample.value)
            timer[1] += 1
        elif kind == "s":
            members = self._sets.setdefault(key, set())
            if len(members) < MAX_SET_SIZE:
                members.add(cast(str, sample.value))
        else:
            self._kv[key] = cast(str, sample.value)

    def values(self) -> dict[str, dict[str, Any]]:
        """The aggregate so far: key -> ``{"type", "value"}`` (timers also ``count``)."""
        result: dict[str, dict[str, Any]] = {}
        for key, kind in self._types.items():
            if kind == "g" and key in self._gauges:
                result[key] = {"type": "g", "value": self._gauges[key]}
            elif kind == "kv" and key in self._kv:
                result[key] = {"type": "kv", "value": self._kv[key]}
            elif kind == "c":
                result[key] = {"type": "c", "value": self._counters.get(key, 0.0)}
            elif kind == "ms":
                total, count = self._timers.get(key, (0.0, 0))
                result[key] = {"type": "ms", "value": total / count if count else 0.0, "count": count}
            elif kind == "s":
                result[key] = {"type": "s", "value": len(self._sets.get(key, ()))}
        return result

    def reset_interval(self) -> None:
        """Start a new interval: counters, timers and sets start again; gauges and kv stay."""
        self._counters.clear()
        self._timers.clear()
        self._sets.clear()


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a job's processes (cpu, memory)."""

    cpu: float = 0.0
    rss: int = 0
    vms: int = 0
    swap: int = 0


@dataclass(slots=True)
class JobStats:
    """A running job's samples and statsd values since its last flush."""

    command: Command
    pid: int
    interval: float
    statsd: StatsdAggregate = field(default_factory=StatsdAggregate)
    latest: Sample | None = None
    samples: list[Sample] = field(default_factory=list)
    next_flush: float = 0.0
    #: pid -> (process, cpu seconds at the last sample, when): for cpu % between samples
    processes: dict[int, tuple[psutil.Process, float, float]] = field(default_factory=dict)

    def shown(self) -> dict[str, Any]:
        """``get_process_stats``: the latest sample of the job."""
        latest = self.latest or Sample()
        return {"cmd": self.command.to_wire(), "cpu": latest.cpu, "rss": latest.rss, "vms": latest.vms,
                "swap": latest.swap}

    def aggregate(self, gid: int, nid: int) -> dict[str, Any]:
        """What is flushed to the controllers for the interval that ends now."""
        samples = self.samples or ([self.latest] if self.latest else [Sample()])
        return {
            "id": self.command.id, "gid": gid, "nid": nid, "cmd": self.command.cmd,
            "domain": self.command.args.domain or "", "name": self.command.args.name or "", "pid": self.pid,
            "time": int(time.time() * 1000), "interval": self.interval, "samples": len(self.samples),
            "cpu": round(sum(sample.cpu for sample in samples) / len(samples), 2),
            "rss": max(sample.rss for sample in samples), "vms": max(sample.vms for sample in samples),
            "swap": max(sample.swap for sample in samples), "statsd": self.statsd.values(),
        }


class Stats:
    """Samples every job's processes and flushes their stats to the controllers at each job's interval."""

    def __init__(self, gid: int, nid: int, default_interval: float, outboxes: Sequence[Outbox]) -> None:
        self.gid = gid
        self.nid = nid
        self.default_interval = default_interval
        self.outboxes = tuple(outboxes)
        self.jobs: dict[str, JobStats] = {}
        self._has_jobs = trio.Event()

    def track(self, command: Command, pid: int) -> None:
        """A run of ``command`` started as ``pid`` (its process group)."""
        interval = command.args.stats_interval or self.default_interval
        self.jobs[command.id] = JobStats(command, pid, interval, next_flush=trio.current_time() + interval)
        self._has_jobs.set()

    def untrack(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)

    def statsd(self, job_id: str, line: str) -> str | None:
        """Take one level-10 line of a job; return what is wrong with it, if anything."""
        stats = self.jobs.get(job_id)
        try:
            sample = parse_statsd(line)
            if stats is not None:
                stats.statsd.add(sample)
        except ProtocolError as exc:
            return str(exc)
        return None

    async def process_stats(self, job_id: str) -> dict[str, Any] | None:
        """The latest sample of a running job (taken now if it has none yet); ``None`` if not running."""
        stats = self.jobs.get(job_id)
        if stats is None:
            return None
        if stats.latest is None:
            await trio.to_thread.run_sync(_sample_jobs, [stats])
        return stats.shown()

    def processes_stats(self, domain: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        return [stats.shown() for stats in self.jobs.values()
                if (domain is None or stats.command.args.domain == domain)
                and (name is None or stats.command.args.name == name)]

    def aggregated(self) -> dict[str, Any]:
        """The latest samples of all running jobs, summed."""
        latest = [stats.latest or Sample() for stats in self.jobs.values()]
        return {"jobs": len(latest), "cpu": round(sum(sample.cpu for sample in latest), 2),
                "rss": sum(sample.rss for sample in latest), "vms": sum(sample.vms for sample in latest),
                "swap": sum(sample.swap for sample in latest)}

    async def run(self) -> None:
        while True:
            if not self.jobs:
                self._has_jobs = trio.Event()
                await self._has_jobs.wait()
            await trio.sleep(SAMPLE_INTERVAL)
            jobs = list(self.jobs.values())
            try:
                await trio.to_thread.run_sync(_sample_jobs, jobs)
                self._flush_due(jobs, trio.current_time())
            except Exception:  # stats are not worth stopping the agent for
                log.exception("sampling job stats failed")

    def _flush_due(self, jobs: Iterable[JobStats], now: float) -> None:
        for stats in jobs:
            if self.jobs.get(stats.command.id) is not stats or now < stats.next_flush:
                continue
            body = envelope.stats_envelope(stats.command.id, stats.aggregate(self.gid, self.nid))
            for outbox in self.outboxes:
                if outbox.has_room(len(body)):
                    outbox.put_bulk(body, [stats.command.id])
            stats.samples.clear()
            stats.statsd.reset_interval()
            stats.next_flush = now + max(stats.interval, SAMPLE_INTERVAL) * (1 - 1e-6)


def _sample_jobs(jobs: list[JobStats]) -> None:
    """Sample every job's process group (in a worker thread: it reads /proc)."""
    groups = _process_groups({stats.pid for stats in jobs})
    for stats in jobs:
        _sample_group(stats, groups.get(stats.pid, ()))


def _process_groups(pgids: set[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                pgid = os.getpgid(int(entry.name))
                if pgid in pgids:
                    groups.setdefault(pgid, []).append(int(entry.name))
    return groups


def _sample_group(stats: JobStats, pids: Iterable[int]) -> None:
    cpu, rss, vms, swap = 0.0, 0, 0, 0
    seen: dict[int, tuple[psutil.Process, float, float]] = {}
    for pid in pids:
        known = stats.processes.get(pid)
        try:
            process = known[0] if known else psutil.Process(pid)
            with process.oneshot():
                times = process.cpu_times()
                used, now = times.user + times.system, time.time()
                since, used_before = (known[2], known[1]) if known else (process.create_time(), 0.0)
                memory = _memory(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if now > since:
            cpu += 100.0 * max(used - used_before, 0.0) / (now - since)
        rss, vms, swap = rss + memory[0], vms + memory[1], swap + memory[2]
        seen[pid] = (process, used, now)
    stats.processes = seen
    stats.latest = Sample(round(cpu, 2), rss, vms, swap)
    stats.samples.append(stats.latest)


def _memory(process: psutil.Process) -> tuple[int, int, int]:
    try:
        full = process.memory_full_info()
        return full.rss, full.vms, getattr(full, "swap", 0)
    except psutil.AccessDenied:
        basic = process.memory_info()
        return basic.rss, basic.vms, 0
