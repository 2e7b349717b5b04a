"""Talking to the Redis bus from trio daemons.

redis-py's own async client is built on asyncio, so the controller and the
agent use this small adapter instead: redis-py packs the commands, hiredis
parses the replies, trio moves the bytes. One connection carries many
concurrent callers, pipelined; blocking commands get connections of their own.
"""

from bus.address import BusAddress
from bus.connection import Connection, ConnectionLost, ReplyError, connect
from bus.link import Backoff, Bus, open_bus

__all__ = ["Backoff", "Bus", "BusAddress", "Connection", "ConnectionLost", "ReplyError", "connect", "open_bus"]
