"""Who may start a process now: ``max_jobs`` slots and serial queues.

A run asks for a ticket when it becomes ready (``enter``, synchronous, so
arrival order is the order of the calls, never the order in which trio
happens to schedule tasks). Free slots go to tickets in arrival order, among
those that may run: a ticket of a queue may run only when it is the first of
its queue and no run of that queue holds a slot. So jobs of one queue run
strictly one after another, in arrival order, a busy queue holds up no one
else, and all jobs together never hold more than ``max_jobs`` slots.
"""

import collections
import heapq
import itertools

import trio


class Ticket:
    """A run's place in line for a slot; ``granted`` is set once it may start."""

    __slots__ = ("granted", "queue", "released", "seq")

    def __init__(self, seq: int, queue: str | None) -> None:
        self.seq = seq
        self.queue = queue
        self.granted = trio.Event()
        self.released = False


class Slots:
    """Hands out the ``max_jobs`` slots in arrival order, one run at a time per serial queue."""

    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max_jobs
        self.running = 0
        self.waiting = 0
        self._arrivals = itertools.count()
        self._ready: list[tuple[int, Ticket]] = []  # heap by arrival: tickets that may take a slot
        self._queues: dict[str, collections.deque[Ticket]] = {}  # tickets of each queue, not yet granted
        self._active_queues: set[str] = set()  # queues with a run holding a slot

    def enter(self, queue: str | None = None) -> Ticket:
        """Line up for a slot; ``await ticket.granted.wait()`` until it is yours."""
        ticket = Ticket(next(self._arrivals), queue)
        self.waiting += 1
        if queue is None:
            heapq.heappush(self._ready, (ticket.seq, ticket))
        else:
            line = self._queues.setdefault(queue, collections.deque())
            line.append(ticket)
            if len(line) == 1 and queue not in self._active_queues:
                heapq.heappush(self._ready, (ticket.seq, ticket))
        self._grant()
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """Give back a slot, or leave the line. Safe to call more than once."""
        if ticket.released:
            return
        ticket.released = True
        queue = ticket.queue
        if ticket.granted.is_set():
            self.running -= 1
            if queue is not None:
                self._active_queues.discard(queue)
                self._promote(queue)
            self._grant()
            return
        self.waiting -= 1
        if queue is not None:
            line = self._queues[queue]
            was_first = line[0] is ticket
            line.remove(ticket)
            if was_first and queue not in self._active_queues:
                self._promote(queue)
        self._grant()

    def _promote(self, queue: str) -> None:
        """The first ticket of an idle queue may now take a slot."""
        line = self._queues.get(queue)
        if line:
            heapq.heappush(self._ready, (line[0].seq, line[0]))
        elif line is not None:
            del self._queues[queue]

    def _grant(self) -> None:
        while self.running < self.max_jobs and self._ready:
            _, ticket = heapq.heappop(self._ready)
            if ticket.released:
                continue
            self.running += 1
            self.waiting -= 1
            if ticket.queue is not None:
                self._queues[ticket.queue].popleft()
                self._active_queues.add(ticket.queue)
            ticket.granted.set()
