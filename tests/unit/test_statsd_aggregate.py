"""Statsd aggregation per job and flush interval: every type."""

import pytest

from agent.stats import StatsdAggregate
from protocol.errors import ProtocolError
from protocol.statsd import parse_statsd


def aggregate(*lines):
    stats = StatsdAggregate()
    for line in lines:
        stats.add(parse_statsd(line))
    return stats


def test_every_type():
    stats = aggregate("g:5|g", "g:+2|g", "g:-1|g", "c:1|c", "c:2|c", "c:1|c|@0.5", "t:10|ms", "t:20|ms",
                      "s:a|s", "s:b|s", "s:a|s", "k:v1|kv", "k:v2|kv")
    assert stats.values() == {
        "g": {"type": "g", "value": 6.0},
        "c": {"type": "c", "value": 5.0},
        "t": {"type": "ms", "value": 15.0, "count": 2},
        "s": {"type": "s", "value": 2},
        "k": {"type": "kv", "value": "v2"},
    }


def test_a_new_interval_keeps_gauges_and_kv_only():
    stats = aggregate("g:5|g", "c:3|c", "t:10|ms", "s:a|s", "k:x|kv")
    stats.reset_interval()
    assert stats.values() == {"g": {"type": "g", "value": 5.0}, "c": {"type": "c", "value": 0.0},
                              "t": {"type": "ms", "value": 0.0, "count": 0}, "s": {"type": "s", "value": 0},
                              "k": {"type": "kv", "value": "x"}}


def test_a_key_keeps_its_type():
    stats = aggregate("x:1|c")
    with pytest.raises(ProtocolError, match="'x' is a 'c' stat"):
        stats.add(parse_statsd("x:1|g"))
