"""agent/outbox.py: envelopes reach the agent's outbox in Redis exactly once, in order (fakeredis, ``fake_bus``).

Each test runs the outbox's loop under trio's mock clock (``autojump_threshold=0``): waiting (the backlog poll,
``trio.sleep`` here) takes no real time, and a test that would wait forever fails at its ``fail_after``.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from fake_bus import FakeBus, transaction

from agent.outbox import BULK_BACKLOG, Outbox
from protocol.keys import AgentKeys

KEYS = AgentKeys(1, 1)
#: Virtual seconds: long enough for anything the outbox would write to have been written.
SETTLE = 1.0


def run(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


@asynccontextmanager
async def serving(outbox: Outbox) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.run)
        with trio.fail_after(60):
            yield
        nursery.cancel_scope.cancel()


def in_redis(bus: FakeBus) -> list[str]:
    """The envelopes in the agent's outbox list in Redis, oldest first."""
    return [raw.decode() for raw in bus.redis.lrange(KEYS.outbox, 0, -1)]


def inflight(bus: FakeBus) -> list[bytes]:
    return bus.redis.lrange(KEYS.inflight, 0, -1)


def drain(bus: FakeBus, count: int | None = None) -> list[str]:
    """What a controller does: take envelopes off the outbox (all of them, or the oldest ``count``)."""
    popped = bus.redis.lpop(KEYS.outbox, count or bus.redis.llen(KEYS.outbox) or 1) or []
    return [raw.decode() for raw in popped]


# -- exactly once ---------------------------------------------------------------------------------


@pytest.mark.parametrize("applied", [True, False], ids=["applied-reply-lost", "not-applied"])
def test_envelopes_arrive_exactly_once_across_a_connection_lost_mid_write(applied):
    bus = FakeBus()
    bus.redis.rpush(KEYS.inflight, b"cmd-1", b"cmd-2")
    delivered: list[bytes] = []
    outbox = Outbox(bus, KEYS, on_delivered=delivered.append)

    async def test() -> None:
        async with serving(outbox):
            await outbox.delivered(outbox.put("first"))
            bus.lose_connection_on(transaction, applied=applied)
            outbox.put("second", finished_command=b"cmd-1")
            outbox.put("third")
            await outbox.delivered()
            await trio.sleep(SETTLE)

    run(test)
    assert (bus.faults_pending, bus.connections_lost, bus.generation) == (0, 1, 2), "the write was cut"
    assert in_redis(bus) == ["first", "second", "third"]
    assert inflight(bus) == [b"cmd-2"] and delivered == [b"cmd-1"], "the finished command left once"
    assert int(bus.redis.get(KEYS.outbox_seq)) == 3
    assert outbox.data_losses == 0 and len(outbox) == 0
    writes = [commands for commands in bus.sent if transaction(commands)]
    assert len(writes) == (2 if applied else 3), "sent again only when it had not arrived"


def test_a_connection_lost_twice_in_a_row_still_delivers_once():
    bus = FakeBus()
    outbox = Outbox(bus, KEYS, on_delivered=lambda raw: None)

    async def test() -> None:
        async with serving(outbox):
            await outbox.delivered(outbox.put("first"))
            bus.lose_connection_on(transaction, applied=False)
            bus.lose_connection_on(transaction, applied=True)
            outbox.put("second")
            await outbox.delivered()
            await trio.sleep(SETTLE)

    run(test)
    assert in_redis(bus) == ["first", "second"] and bus.generation == 3


# -- two lanes ------------------------------------------------------------------------------------


def test_urgent_envelopes_go_before_bulk_ones():
    bus = FakeBus()
    outbox = Outbox(bus, KEYS, on_delivered=lambda raw: None)
    outbox.put_bulk("log-1", jobs=["a"])
    outbox.put_bulk("log-2", jobs=["b"])
    outbox.put("answer-c", job="c")
    outbox.put("register")

    async def test() -> None:
        async with serving(outbox):
            await outbox.delivered()

    run(test)
    assert in_redis(bus) == ["answer-c", "register", "log-1", "log-2"]


def test_an_update_of_a_job_waits_for_the_bulk_envelopes_of_that_job_put_before_it():
    bus = FakeBus()
    outbox = Outbox(bus, KEYS, on_delivered=lambda raw: None)

    async def test() -> None:
        async with serving(outbox):
            for i in range(BULK_BACKLOG):  # the outbox in Redis is full of bulk envelopes: more bulk ones wait
                outbox.put_bulk(f"flood-{i}", jobs=["x"])
            await outbox.delivered()
            outbox.put_bulk("log-j", jobs=["j"])
            update_j = outbox.put("update-j", job="j")
            update_k = outbox.put("update-k", job="k")  # no bulk envelope of k waits: it goes
            final_j = outbox.put("final-j", job="j")  # behind update-j
            await outbox.delivered(update_k)
            await trio.sleep(SETTLE)
            assert in_redis(bus) == [f"flood-{i}" for i in range(BULK_BACKLOG)] + ["update-k"]
            assert not update_j.done and not final_j.done
            drain(bus)
            await outbox.delivered()

    run(test)
    assert in_redis(bus) == ["log-j", "update-j", "final-j"]


def test_bulk_envelopes_wait_while_the_outbox_in_redis_holds_the_backlog():
    bus = FakeBus()
    outbox = Outbox(bus, KEYS, on_delivered=lambda raw: None)
    logs = [f"log-{i}" for i in range(10)]

    async def test() -> None:
        async with serving(outbox):
            for log in logs:
                outbox.put_bulk(log, jobs=["flood"])
            await trio.sleep(SETTLE)
            assert in_redis(bus) == logs[:BULK_BACKLOG]
            answer = outbox.put("answer", job="other")  # an answer waits behind BULK_BACKLOG envelopes at most
            await outbox.delivered(answer)
            await trio.sleep(SETTLE)
            assert in_redis(bus) == [*logs[:BULK_BACKLOG], "answer"]
            taken = drain(bus, 2)  # the controllers drain: the outbox fills up to the backlog again
            await trio.sleep(SETTLE)
            assert in_redis(bus) == [*logs[2:BULK_BACKLOG], "answer", logs[BULK_BACKLOG]]
            while len(outbox):
                taken += drain(bus)
                await trio.sleep(SETTLE)
                assert bus.redis.llen(KEYS.outbox) <= BULK_BACKLOG
            taken += drain(bus)
            assert taken == [*logs[:BULK_BACKLOG], "answer", *logs[BULK_BACKLOG:]]

    run(test)


# -- a bus that lost its data ---------------------------------------------------------------------


@pytest.mark.parametrize("in_flight", [False, True], ids=["between-writes", "during-a-write"])
def test_a_bus_that_lost_its_data_gets_what_put_first_queued_first(in_flight):
    bus = FakeBus()
    bus.redis.rpush(KEYS.inflight, b"cmd-1", b"cmd-2")
    delivered: list[bytes] = []
    lost: list[int] = []

    def reannounce(everything: bool) -> None:
        assert everything
        lost.append(bus.generation)
        outbox.put_first("adopt cmd-1 cmd-2")

    outbox = Outbox(bus, KEYS, on_delivered=delivered.append, on_data_lost=reannounce)

    async def test() -> None:
        async with serving(outbox):
            await outbox.delivered(outbox.put("register"))
            await outbox.delivered(outbox.put("running-1", job="1"))
            if in_flight:  # Redis restarts empty while the next write is on its way: it never arrives
                bus.lose_connection_on(transaction, applied=False, then=bus.redis.flushall)
            else:  # Redis restarted empty: the agent reconnects to it
                bus.lose_data()
            outbox.put("result-1", finished_command=b"cmd-1", job="1")
            await outbox.delivered()
            await outbox.delivered(outbox.put("later"))
            await trio.sleep(SETTLE)

    run(test)
    assert lost == [2], "noticed once, on the first connection to the emptied bus"
    assert outbox.data_losses == 1
    assert in_redis(bus) == ["adopt cmd-1 cmd-2", "result-1", "later"]
    assert inflight(bus) == [], "putting the inflight list back is the uplink's (Uplink.reconcile)"
    assert delivered == [b"cmd-1"]
    assert int(bus.redis.get(KEYS.outbox_seq)) >= 5, "numbered on from before (never again from 1)"


def test_a_failover_that_lost_our_last_write_is_noticed_and_the_lost_write_goes_again_after_put_first():
    """The replica a failover promoted had our writes up to the first one only: outseq is behind what the old
    master confirmed, so the outbox says writes were lost (not all data), writes the lost one again right after
    the adopt envelope (its command forgotten once only), and numbers on from before."""
    bus = FakeBus()
    lost: list[bool] = []
    delivered: list[bytes] = []

    def reannounce(everything: bool) -> None:
        lost.append(everything)
        outbox.put_first("adopt")

    outbox = Outbox(bus, KEYS, on_delivered=delivered.append, on_data_lost=reannounce)

    async def test() -> None:
        async with serving(outbox):
            await outbox.delivered(outbox.put("register"))
            await outbox.delivered(outbox.put("result-1", finished_command=b"cmd-1", job="1"))
            bus.redis.set(KEYS.outbox_seq, 1)  # the new master as the replica had it: the second write missing
            bus.redis.rpop(KEYS.outbox)
            bus.reconnect()
            await outbox.delivered(outbox.put("result-2", job="2"))
            await trio.sleep(SETTLE)

    run(test)
    assert lost == [False] and outbox.data_losses == 1
    assert in_redis(bus) == ["register", "adopt", "result-1", "result-2"]
    assert delivered == [b"cmd-1"], "the command was forgotten when first delivered, not again"
    assert int(bus.redis.get(KEYS.outbox_seq)) > 2
