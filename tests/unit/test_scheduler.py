"""The scheduler: max_jobs slots and serial queues, granted strictly in arrival order."""

import trio
import trio.testing

from agent.scheduler import Scheduler


def granted(tickets):
    """Indexes of the tickets holding a slot now."""
    return [index for index, ticket in enumerate(tickets) if ticket.granted.is_set() and not ticket.released]


def test_slots_are_granted_in_arrival_order_and_given_back():
    scheduler = Scheduler(max_jobs=2)
    tickets = [scheduler.enter() for _ in range(5)]
    assert granted(tickets) == [0, 1]
    assert (scheduler.running, scheduler.waiting) == (2, 3)
    scheduler.leave(tickets[1])
    assert granted(tickets) == [0, 2]
    scheduler.leave(tickets[0])
    scheduler.leave(tickets[2])
    assert granted(tickets) == [3, 4]
    assert (scheduler.running, scheduler.waiting) == (2, 0)


def test_a_queue_runs_one_at_a_time_in_order_and_holds_up_no_one_else():
    scheduler = Scheduler(max_jobs=10)
    a1, a2, other, a3 = scheduler.enter("a"), scheduler.enter("a"), scheduler.enter(), scheduler.enter("a")
    assert [t.granted.is_set() for t in (a1, a2, other, a3)] == [True, False, True, False]
    scheduler.leave(a1)
    assert (a2.granted.is_set(), a3.granted.is_set()) == (True, False)
    scheduler.leave(a2)
    assert a3.granted.is_set()


def test_a_freed_queue_competes_for_slots_by_arrival():
    scheduler = Scheduler(max_jobs=2)
    q1 = scheduler.enter("q")
    plain = scheduler.enter()
    q2 = scheduler.enter("q")  # arrived before late: must get the next slot once q is free
    late = scheduler.enter()
    scheduler.leave(q1)
    assert q2.granted.is_set() and not late.granted.is_set()
    scheduler.leave(plain)
    assert late.granted.is_set()


def test_leaving_the_line_before_being_granted():
    scheduler = Scheduler(max_jobs=1)
    first, second, third = scheduler.enter("q"), scheduler.enter("q"), scheduler.enter("q")
    scheduler.leave(second)
    scheduler.leave(second)  # twice is harmless
    assert scheduler.waiting == 1
    scheduler.leave(first)
    assert third.granted.is_set() and scheduler.running == 1
    waiting_head = [scheduler.enter("r"), scheduler.enter("r")]
    scheduler.leave(waiting_head[0])  # the head of an idle queue leaves: the next one becomes eligible
    scheduler.leave(third)
    assert waiting_head[1].granted.is_set()


def test_waiting_tasks_wake_in_arrival_order():
    order = []

    async def main():
        scheduler = Scheduler(max_jobs=1)
        tickets = [scheduler.enter() for _ in range(4)]

        async def job(index, ticket):
            await ticket.granted.wait()
            order.append(index)
            await trio.sleep(0.01)
            scheduler.leave(ticket)

        async with trio.open_nursery() as nursery:
            for index in reversed(range(4)):  # tasks start in the opposite order
                nursery.start_soon(job, index, tickets[index])

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert order == [0, 1, 2, 3]
