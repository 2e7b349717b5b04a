"""controller/sequencer.py: a controller's lanes commit their batches in the order they were claimed."""

import trio
import trio.testing

from controller.sequencer import Sequencer


def test_batches_commit_in_the_order_they_were_claimed_whatever_finishes_deciding_first():
    committed: list[str] = []

    async def lane(sequencer: Sequencer, name: str, deciding: float, claimed: trio.Event | None) -> None:
        if claimed is not None:
            await claimed.wait()
        async with sequencer.claiming() as ticket:
            pass
        if name == "first":
            first_claimed.set()
        await trio.sleep(deciding)
        async with sequencer.committing(ticket):
            committed.append(name)

    async def main() -> None:
        sequencer = Sequencer()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lane, sequencer, "first", 0.05, None)
            nursery.start_soon(lane, sequencer, "second", 0.0, first_claimed)

    first_claimed = trio.Event()
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))  # the first lane's 0.05 s pass at once
    assert committed == ["first", "second"]


def test_a_skipped_ticket_does_not_hold_up_later_batches():
    async def main() -> list[int]:
        sequencer, committed = Sequencer(), []
        tickets = []
        for _ in range(3):
            async with sequencer.claiming() as ticket:
                tickets.append(ticket)
        sequencer.skip(tickets[0])
        with trio.fail_after(1):
            for ticket in tickets[1:]:
                async with sequencer.committing(ticket):
                    committed.append(ticket)
        return committed

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == [1, 2]


def test_a_claim_that_fails_skips_its_ticket():
    async def main() -> list[int]:
        sequencer, committed = Sequencer(), []
        try:
            async with sequencer.claiming():
                raise ConnectionError("the claim broke")
        except ConnectionError:
            pass
        async with sequencer.claiming() as ticket:
            pass
        with trio.fail_after(1):
            async with sequencer.committing(ticket):
                committed.append(ticket)
        return committed

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == [1]
