"""acdaemon.metrics: histograms, listen addresses, and a scrape served from the trio loop."""

import urllib.request

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from acdaemon.metrics import Histogram, Metric, by_label, counter, parse_listen, serving_metrics


def test_histogram_buckets_are_inclusive_upper_bounds_and_take_counts():
    histogram = Histogram("h", "help", (0.1, 1.0))
    histogram.observe(0.1)
    histogram.observe(0.5, count=3)
    histogram.observe(7.0)
    assert histogram.counts == [1, 3, 1] and histogram.sum == pytest.approx(0.1 + 1.5 + 7.0)
    copy = histogram.snapshot()
    histogram.observe(0.0)
    assert copy.counts == [1, 3, 1], "a snapshot does not change afterwards"


@pytest.mark.parametrize(("listen", "parsed"), [("127.0.0.1:9100", ("127.0.0.1", 9100)), ("[::1]:0", ("::1", 0)),
                                                ("localhost:65535", ("localhost", 65535))])
def test_listen_addresses(listen, parsed):
    assert parse_listen(listen) == parsed


@pytest.mark.parametrize("listen", ["9100", ":9100", "host:", "host:http", "host:70000"])
def test_bad_listen_addresses(listen):
    with pytest.raises(ValueError, match="expected host:port"):
        parse_listen(listen)


def test_a_scrape_reads_the_daemon_inside_its_loop():
    state = {"routed": 0, "scraped_in": None}
    latency = Histogram("ac_test_seconds", "latency", (0.5,))
    latency.observe(0.2, count=4)

    def collect():
        state["scraped_in"] = trio.lowlevel.current_task().name  # raises outside the trio loop
        return [counter("ac_test_routed_total", "routed", state["routed"]), latency,
                by_label("ac_test_results_total", "counter", "results", "state", [("SUCCESS", 2), ("ERROR", 1)]),
                Metric("ac_test_info", "gauge", "info", [(("x", "1.0"), 1)], ("id", "version"))]

    async def main():
        async with serving_metrics("127.0.0.1:0", collect) as address:
            state["routed"] = 5
            url = f"http://{address}/metrics"
            return await trio.to_thread.run_sync(lambda: urllib.request.urlopen(url, timeout=30).read().decode())

    text = trio.run(main)
    assert state["scraped_in"] is not None
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    assert samples[("ac_test_routed_total", ())] == 5
    assert samples[("ac_test_seconds_bucket", (("le", "0.5"),))] == 4
    assert samples[("ac_test_seconds_bucket", (("le", "+Inf"),))] == 4
    assert samples[("ac_test_seconds_sum", ())] == pytest.approx(0.8)
    assert samples[("ac_test_results_total", (("state", "ERROR"),))] == 1
    assert samples[("ac_test_info", (("id", "x"), ("version", "1.0")))] == 1
    assert samples[("process_open_fds", ())] > 0


def test_metrics_off_serve_nothing():
    async def main():
        async with serving_metrics("", list) as address:
            return address

    assert trio.run(main) == ""
