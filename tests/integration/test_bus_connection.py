"""acbus.Connection against a real redis-server: on a plain socket it writes and reads the descriptor itself.
A pipeline bigger than the socket's buffer goes out whole while other tasks send behind it; a sender cancelled
half-way breaks the connection (half a command is on the wire) instead of going on; a closed connection
refuses to send."""

import os
import signal

import pytest
import trio
import trio.testing

from acbus.address import BusAddress
from acbus.connection import MESSAGES_HELD, ConnectionLost, connect
from acgrid.redis_server import RedisServer

#: Bigger than any loopback socket buffer: the write is cut into parts.
BIG = 32 * 1024 * 1024


@pytest.fixture(scope="module")
def server():
    with RedisServer(persistence=False) as running:
        yield running


def test_a_pipeline_bigger_than_the_buffer_goes_out_whole_with_others_behind_it(server):
    async def test() -> list[int]:
        async with connect(BusAddress.from_url(server.url)) as connection:
            assert connection._fd is not None, "a plain socket: the descriptor path"
            counts: list[int] = []

            async def small() -> None:
                counts.append(await connection.execute("INCR", "counter"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection.execute, "SET", "big", b"x" * BIG)
                await trio.testing.wait_all_tasks_blocked()  # the big one is cut short, waiting to write more
                for _ in range(50):
                    nursery.start_soon(small)
            assert await connection.execute("STRLEN", "big") == BIG
            return counts

    assert sorted(trio.run(test)) == list(range(1, 51)), "each small command ran once"


def test_a_send_cancelled_half_way_breaks_the_connection_and_a_closed_one_refuses(server):
    assert server.process is not None

    async def test() -> None:
        async with connect(BusAddress.from_url(server.url)) as connection:
            scope = trio.CancelScope()

            async def big() -> None:
                with scope:
                    await connection.execute("SET", "big", b"y" * BIG)

            os.kill(server.process.pid, signal.SIGSTOP)  # Redis reads nothing: the write stays cut short
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(big)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            assert scope.cancelled_caught
            with pytest.raises(ConnectionLost, match="sending to the bus failed"):
                await connection.execute("PING")
        async with connect(BusAddress.from_url(server.url)) as fresh:
            assert await fresh.execute("PING") == b"PONG", "the bus itself is fine"
            stale = fresh
        with pytest.raises(ConnectionLost, match="closed"):
            await stale.execute("PING")

    trio.run(test)


def test_a_flood_of_messages_reaches_a_subscriber_in_order_in_few_batches(server):
    """A subscriber that takes ``next_messages`` wakes once per read from the socket, not once per message (how
    the controller stays cheap when an agent rings its bell in a loop), and loses nothing while it is behind:
    past ``MESSAGES_HELD`` the reader leaves the rest in Redis until it has taken them."""
    count = 3 * MESSAGES_HELD

    async def test() -> tuple[list[bytes], int]:
        address = BusAddress.from_url(server.url)
        async with connect(address) as subscriber, connect(address) as publisher:
            await subscriber.subscribe("flood")
            for start in range(0, count, 1000):
                await publisher.pipeline([("PUBLISH", "flood", str(number)) for number in range(start, start + 1000)])
            received, batches = [], 0
            while len(received) < count:
                batch = await subscriber.next_messages()
                assert {channel for channel, _ in batch} == {b"flood"}
                received += [data for _, data in batch]
                batches += 1
            return received, batches

    received, batches = trio.run(test)
    assert received == [str(number).encode() for number in range(count)], "every message, in order"
    assert batches <= count // 20, f"{batches} wake-ups for {count} messages"
