"""acbus.link.Backoff: how a daemon waits before trying the bus again (a full Redis, a refused connection)."""

import random

from acbus.link import RECONNECT_CAP, Backoff


def test_delays_grow_to_the_cap_each_drawn_from_its_upper_half():
    random.seed(7)
    backoff = Backoff(first=0.1, cap=2.0)
    delays = [backoff.next() for _ in range(10)]
    ceilings = [min(2.0, 0.1 * 2 ** attempt) for attempt in range(10)]
    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert delays[0] < delays[3] < delays[6], "growing"
    assert max(delays) <= 2.0, "capped"


def test_a_fleet_does_not_come_back_in_lockstep():
    at_cap = [Backoff(cap=RECONNECT_CAP) for _ in range(100)]
    for backoff in at_cap:
        backoff.attempt = 20
    delays = {round(backoff.next(), 3) for backoff in at_cap}
    assert len(delays) > 50 and min(delays) >= RECONNECT_CAP / 2


def test_reset_starts_again_from_the_first_delay():
    backoff = Backoff(first=0.05, cap=5.0)
    for _ in range(8):
        backoff.next()
    backoff.reset()
    assert backoff.next() <= 0.05
