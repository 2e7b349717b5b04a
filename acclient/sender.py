"""Putting commands on the bus: ``send.lua`` in one round trip, however many commands.

Commands go through ``send.lua`` (stamped with the bus's clock; the bus epoch and whether a controller is
alive come back in the same reply), called with ``EVALSHA`` straight on the connection: redis-py's
``Script`` object costs a quarter of what a whole ``client.cmd`` may, and the script is sent in full only
when the bus does not know it (a restarted Redis, a new master after a failover).
"""

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from functools import partial
from importlib import resources
from typing import Any

import redis

from protocol import keys

log = logging.getLogger(__name__)

#: Queues commands stamped with the bus's clock (``acclient/send.lua``).
SEND_SCRIPT = (resources.files("acclient") / "send.lua").read_text()
SEND_SHA = hashlib.sha1(SEND_SCRIPT.encode()).hexdigest()
#: Commands per script call: each call holds Redis for about a millisecond at most.
PER_CALL = 1000
_KEYS = (keys.CMDS_QUEUE, keys.BUS_EPOCH, keys.CONTROLLER_ALIVE)


class Sender:
    """Sends command bodies (JSON without its closing brace) and returns the bus epoch and whether a controller
    is alive. With ``wait`` (``("WAIT", replicas, ms)``), each send is confirmed by that many replicas in the
    same round trip, so that a failover cannot lose it; fewer in time is logged. ``call`` serves the other
    call made once per command, the wait for its result, on the same kept connection."""

    def __init__(self, connection: redis.Redis, wait: tuple[str, int, int] | None = None) -> None:
        self.connection = connection
        self.wait = wait
        self.unconfirmed = 0
        pool = connection.connection_pool
        # redis-py before 5.3 wants a command name, later ones warn when given one
        self._get_connection = (pool.get_connection if redis.VERSION >= (5, 3)
                                else partial(pool.get_connection, "EVALSHA"))
        self._kept: Any = None  # a pooled connection kept between sends (by the process that took it)
        self._kept_by = 0
        self._kept_lock = threading.Lock()
        #: Calls whose reply was cut off (the connection broke, or the bus did not answer in time). A pop may
        #: have happened on the bus while its reply was lost: a waiter that sees this change looks for it.
        self.cut_offs = 0

    def send(self, bodies: Sequence[str]) -> tuple[bytes | None, bool]:
        try:
            return self._send(bodies)
        except redis.exceptions.NoScriptError:
            self.connection.script_load(SEND_SCRIPT)
            return self._send(bodies)

    def _send(self, bodies: Sequence[str]) -> tuple[bytes | None, bool]:
        if len(bodies) == 1 and self.wait is None:
            epoch, alive = self.call("EVALSHA", SEND_SHA, 3, *_KEYS, bodies[0])
            return epoch, bool(alive)
        with self.connection.pipeline(transaction=False) as pipe:
            for start in range(0, len(bodies), PER_CALL):
                pipe.execute_command("EVALSHA", SEND_SHA, 3, *_KEYS, *bodies[start:start + PER_CALL])
            if self.wait is not None:
                pipe.execute_command(*self.wait)
            replies: list[Any] = pipe.execute()
        if self.wait is not None:
            self._confirmed(replies.pop())
        epoch, alive = replies[-1]
        return epoch, bool(alive)

    def call(self, *args: Any, again_after_timeout: bool = True, read_within: float | None = None) -> Any:
        """One command (the raw reply) straight on a pooled connection: redis-py's retry wrapper and
        instrumentation around ``execute_command`` cost a fifth of a whole ``client.cmd``, and taking a
        connection from the pool and giving it back another tenth (it polls the socket), so one connection is
        kept for the next call. A thread that finds it in use by another takes one from the pool for this call
        (calls never wait for each other); a forked child takes its own. A connection that fails goes back
        broken, and the command takes redis-py's own path, which connects again (and retries, as it would
        have); after a socket timeout too, unless not ``again_after_timeout`` (a wait: its caller asks again
        within its own deadline). With ``read_within``, a reply that has not begun to come in that many seconds
        is a timeout too (a wait's own bound, shorter than the socket timeout)."""
        if not self._kept_lock.acquire(blocking=False):
            return self._call_on(self._get_connection(), args, False, again_after_timeout, read_within)
        try:
            if self._kept is None or self._kept_by != os.getpid():
                self._kept, self._kept_by = self._get_connection(), os.getpid()
            return self._call_on(self._kept, args, True, again_after_timeout, read_within)
        finally:
            self._kept_lock.release()

    def _call_on(self, connection: Any, args: tuple[Any, ...], keep: bool, again_after_timeout: bool,
                 read_within: float | None) -> Any:
        pool = self.connection.connection_pool
        try:
            connection.send_packed_command(connection.pack_command(*args), check_health=False)
            if read_within is not None and not connection.can_read(timeout=read_within):
                raise redis.TimeoutError(f"the bus did not answer within {read_within:g} s")
            reply = connection.read_response()
        except redis.ResponseError:  # an answer: the connection is in order
            if not keep:
                pool.release(connection)
            raise
        except BaseException as exc:  # cut off, maybe half-way through a reply: never used again
            connection.disconnect()
            pool.release(connection)
            if keep:
                self._kept = None
            self.cut_offs += 1
            if isinstance(exc, redis.ConnectionError) or (again_after_timeout and isinstance(exc, redis.TimeoutError)):
                return self.connection.execute_command(*args)
            raise
        if not keep:
            pool.release(connection)
        return reply

    def _confirmed(self, acknowledged: int) -> None:
        assert self.wait is not None
        if acknowledged < self.wait[1]:
            self.unconfirmed += 1
            if self.unconfirmed in (1, 10) or self.unconfirmed % 100 == 0:
                log.warning("%d of the %d replicas asked for confirmed a command within %d ms: a failover now "
                            "could lose it (%d such commands so far)", acknowledged, self.wait[1], self.wait[2],
                            self.unconfirmed)
