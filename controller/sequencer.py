"""Keeping the lanes of one controller in order.

A controller routes with two lanes, so that one lane decides a batch while
Redis applies the other's. Each batch gets a ticket when it is claimed
(claims happen one at a time), and batches are committed in ticket order:
commands leave a controller in the order they were queued, whichever lane
carried them.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class Sequencer:
    """Tickets that make two lanes commit their batches in the order they claimed them."""

    def __init__(self) -> None:
        self._claim_lock = trio.Lock()
        self._issued = 0
        self._next_to_commit = 0
        self._finished: set[int] = set()
        self._advanced = trio.Event()

    @asynccontextmanager
    async def claiming(self) -> AsyncIterator[int]:
        """Claim alone; yields the batch's ticket, which must then be ``committing`` or ``skip``-ped."""
        async with self._claim_lock:
            ticket = self._issued
            self._issued += 1
            try:
                yield ticket
            except BaseException:
                self.skip(ticket)
                raise

    @asynccontextmanager
    async def committing(self, ticket: int) -> AsyncIterator[None]:
        """Wait until every earlier batch is committed (or skipped); commit; let the next one go."""
        try:
            while self._next_to_commit != ticket:
                await self._advanced.wait()
            yield
        finally:
            self.skip(ticket)

    def skip(self, ticket: int) -> None:
        """Mark a ticket done, so later batches need not wait for it (its lane failed)."""
        self._finished.add(ticket)
        advanced = False
        while self._next_to_commit in self._finished:
            self._finished.remove(self._next_to_commit)
            self._next_to_commit += 1
            advanced = True
        if advanced:
            self._advanced.set()
            self._advanced = trio.Event()
