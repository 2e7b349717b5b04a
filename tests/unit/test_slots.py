"""Slots: max_jobs slots and serial queues, granted strictly in arrival order."""

import trio
import trio.testing

from agent.slots import Slots


def granted(tickets):
    """Indexes of the tickets holding a slot now."""
    return [index for index, ticket in enumerate(tickets) if ticket.granted.is_set() and not ticket.released]


def test_slots_are_granted_in_arrival_order_and_given_back():
    slots = Slots(max_jobs=2)
    tickets = [slots.enter() for _ in range(5)]
    assert granted(tickets) == [0, 1]
    assert (slots.running, slots.waiting) == (2, 3)
    slots.leave(tickets[1])
    assert granted(tickets) == [0, 2]
    slots.leave(tickets[0])
    slots.leave(tickets[2])
    assert granted(tickets) == [3, 4]
    assert (slots.running, slots.waiting) == (2, 0)


def test_a_queue_runs_one_at_a_time_in_order_and_holds_up_no_one_else():
    slots = Slots(max_jobs=10)
    a1, a2, other, a3 = slots.enter("a"), slots.enter("a"), slots.enter(), slots.enter("a")
    assert [t.granted.is_set() for t in (a1, a2, other, a3)] == [True, False, True, False]
    slots.leave(a1)
    assert (a2.granted.is_set(), a3.granted.is_set()) == (True, False)
    slots.leave(a2)
    assert a3.granted.is_set()


def test_a_freed_queue_competes_for_slots_by_arrival():
    slots = Slots(max_jobs=2)
    q1 = slots.enter("q")
    plain = slots.enter()
    q2 = slots.enter("q")  # arrived before late: must get the next slot once q is free
    late = slots.enter()
    slots.leave(q1)
    assert q2.granted.is_set() and not late.granted.is_set()
    slots.leave(plain)
    assert late.granted.is_set()


def test_leaving_the_line_before_being_granted():
    slots = Slots(max_jobs=1)
    first, second, third = slots.enter("q"), slots.enter("q"), slots.enter("q")
    slots.leave(second)
    slots.leave(second)  # twice is harmless
    assert slots.waiting == 1
    slots.leave(first)
    assert third.granted.is_set() and slots.running == 1
    waiting_head = [slots.enter("r"), slots.enter("r")]
    slots.leave(waiting_head[0])  # the head of an idle queue leaves: the next one becomes eligible
    slots.leave(third)
    assert waiting_head[1].granted.is_set()


def test_waiting_tasks_wake_in_arrival_order():
    order = []

    async def main():
        slots = Slots(max_jobs=1)
        tickets = [slots.enter() for _ in range(4)]

        async def job(index, ticket):
            await ticket.granted.wait()
            order.append(index)
            await trio.sleep(0.01)
            slots.leave(ticket)

        async with trio.open_nursery() as nursery:
            for index in reversed(range(4)):  # tasks start in the opposite order
                nursery.start_soon(job, index, tickets[index])

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert order == [0, 1, 2, 3]
