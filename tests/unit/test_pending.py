"""acbus.link.Pending: batches of marked items, and the pacing of an item marked again and again for nothing
(an agent ringing its bell in a loop with an empty outbox). trio's mock clock: rests pass without waiting."""

import itertools

import trio
import trio.testing

from acbus.link import IDLE_REST_CAP, IDLE_REST_FIRST, IDLE_STREAK_GAP, Pending


class Handler:
    """Records when each item was handled; says an item is idle while ``idle`` holds it."""

    def __init__(self) -> None:
        self.handled: list[tuple[float, str]] = []
        self.idle: set[str] = set()

    async def __call__(self, batch: list[str]) -> set[str]:
        self.handled += [(trio.current_time(), item) for item in batch]
        return self.idle & set(batch)


def run(scenario) -> None:
    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


async def served(pending: Pending[str], handler: Handler, nursery: trio.Nursery) -> None:
    nursery.start_soon(pending.serve, None, handler, "testing")
    await trio.testing.wait_all_tasks_blocked()


def test_an_item_that_finds_work_is_handled_at_once_every_time():
    async def scenario() -> None:
        pending, handler = Pending[str](), Handler()
        async with trio.open_nursery() as nursery:
            await served(pending, handler, nursery)
            for _ in range(20):
                pending.mark("a")
                await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert [item for _, item in handler.handled] == ["a"] * 20
        assert {at for at, _ in handler.handled} == {0.0}, "no rest: the clock never moved"

    run(scenario)


def test_an_item_marked_again_and_again_for_nothing_is_paced_up_to_the_cap_and_reported_once():
    async def scenario() -> None:
        flooded: list[str] = []
        pending, handler = Pending[str](flooded.append), Handler()
        handler.idle.add("a")
        async with trio.open_nursery() as nursery:
            await served(pending, handler, nursery)
            deadline = trio.current_time() + 2.0
            while trio.current_time() < deadline:  # a flood: marked in every pass of the scheduler
                pending.mark("a")
                pending.mark("b")  # an honest item beside it is never held back
                await trio.sleep(0.0001)
            nursery.cancel_scope.cancel()
        times = [at for at, item in handler.handled if item == "a"]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert gaps[1] >= IDLE_REST_FIRST and max(gaps) <= IDLE_REST_CAP + 0.001, gaps
        assert all(later > earlier - 0.0002 for earlier, later in itertools.pairwise(gaps[1:])), "no rest shorter"
        assert len(times) < 30, f"{len(times)} handlings of the flooding item in 2 s"
        assert flooded == ["a"], "reported once, when its rest first reached the cap"
        assert sum(item == "b" for _, item in handler.handled) > 10_000

    run(scenario)


def test_work_found_ends_the_rest_and_a_lone_idle_handling_starts_no_streak():
    async def scenario() -> None:
        pending, handler = Pending[str](), Handler()
        async with trio.open_nursery() as nursery:
            await served(pending, handler, nursery)

            async def handled_at(item: str) -> float:
                pending.mark(item)
                await trio.testing.wait_all_tasks_blocked()
                while not handler.handled or handler.handled[-1][1] != item:
                    await trio.sleep(IDLE_REST_FIRST / 10)
                return handler.handled[-1][0]

            handler.idle.add("a")
            for _ in range(5):  # a streak: rests grow
                await handled_at("a")
            handler.idle.discard("a")
            await handled_at("a")  # held until its rest ended, then found work
            started = trio.current_time()
            assert await handled_at("a") == started, "the streak is over: at once"
            handler.idle.add("a")
            for _ in range(3):  # idle handlings, each long after the one before: never a streak
                await trio.sleep(IDLE_STREAK_GAP)
                started = trio.current_time()
                assert await handled_at("a") == started
            nursery.cancel_scope.cancel()

    run(scenario)
