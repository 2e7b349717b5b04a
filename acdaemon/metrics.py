"""Prometheus metrics over HTTP, opt-in (``[metrics] listen``).

The parts of a daemon keep plain counters (an integer add on a hot path,
nothing more). At each scrape, the daemon's ``collect`` function turns them
into ``Metric`` values; it runs inside the trio loop (``trio.from_thread``),
so nothing a daemon owns is ever read from another thread while it changes.
prometheus_client serves the result from a thread of its own, with the
usual ``process_*`` metrics (memory, CPU, open files, start time) beside.

prometheus_client is imported only when metrics are on: it costs about
2 MB of memory, and an idle agent should stay under 40 MB.
"""

import bisect
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from acdaemon.run import StartError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric as PrometheusMetric

log = logging.getLogger(__name__)

#: Seconds a stopping daemon waits for the HTTP server's thread.
SHUTDOWN_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric family as a scrape sees it: ``samples`` maps label values to a value."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    samples: Sequence[tuple[tuple[str, ...], float]]
    labels: tuple[str, ...] = ()


def counter(name: str, help: str, value: float) -> Metric:
    return Metric(name, "counter", help, [((), value)])


def gauge(name: str, help: str, value: float) -> Metric:
    return Metric(name, "gauge", help, [((), value)])


def by_label(name: str, kind: str, help: str, label: str, values: Iterable[tuple[str, float]]) -> Metric:
    """A family with one label, e.g. results by ``state``."""
    return Metric(name, kind, help, [((key,), value) for key, value in values], (label,))


@dataclass(slots=True)
class Histogram:
    """Observations counted by upper bound; ``observe`` is one bisect.

    ``count`` observes the same value several times at once: a batch of
    commands that all waited equally long.
    """

    name: str
    help: str
    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.sum += value * count

    def snapshot(self) -> "Histogram":
        copy = Histogram(self.name, self.help, self.bounds)
        copy.counts, copy.sum = list(self.counts), self.sum
        return copy


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:9100"`` for IPv6) as ``(host, port)``; ValueError says what is wrong."""
    host, colon, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected host:port, e.g. 127.0.0.1:9100 (port 0: any free port)")
    return host, int(port)


@asynccontextmanager
async def serving_metrics(listen: str, collect: Callable[[], Sequence[Metric | Histogram]]) -> AsyncIterator[str]:
    """Serve ``collect()`` at ``http://<listen>/metrics`` for the duration of the block.

    Yields the address actually listened on (``host:port``; the port chosen
    when ``listen`` asks for port 0), or "" when ``listen`` is "" (metrics off).
    """
    if not listen:
        yield ""
        return
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

    token = trio.lowlevel.current_trio_token()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(lambda: trio.from_thread.run_sync(_snapshot, collect, trio_token=token)))
    ProcessCollector(registry=registry)
    host, port = parse_listen(listen)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except (OSError, socket.gaierror) as exc:
        raise StartError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
    address = f"[{host}]:{server.server_port}" if ":" in host else f"{host}:{server.server_port}"
    log.info("metrics on http://%s/metrics", address)
    try:
        yield address
    finally:
        with trio.move_on_after(SHUTDOWN_TIMEOUT) as scope:
            scope.shield = True
            await trio.to_thread.run_sync(server.shutdown, abandon_on_cancel=True)
        server.server_close()


def _snapshot(collect: Callable[[], Sequence[Metric | Histogram]]) -> list[Metric | Histogram]:
    """In the trio loop: the metrics, histograms copied so that nothing changes under the scrape."""
    return [metric.snapshot() if isinstance(metric, Histogram) else metric for metric in collect()]


class _Scrape:
    """A prometheus_client collector that asks the daemon for its metrics."""

    def __init__(self, snapshot: Callable[[], list[Metric | Histogram]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable["PrometheusMetric"]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        for metric in self.snapshot():
            if isinstance(metric, Histogram):
                histogram = HistogramMetricFamily(metric.name, metric.help)
                cumulative, buckets = 0, []
                for bound, count in zip((*metric.bounds, float("inf")), metric.counts, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
                histogram.add_metric([], buckets, metric.sum)
                yield histogram
            else:
                kind = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
                family = kind(metric.name, metric.help, labels=metric.labels)
                for label_values, value in metric.samples:
                    family.add_metric(label_values, value)
                yield family
