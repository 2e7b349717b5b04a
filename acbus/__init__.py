"""Talking to the Redis bus from trio daemons.

redis-py's own async client is built on asyncio, so the controller and the
agent use this small adapter instead: redis-py packs the commands, hiredis
parses the replies, trio moves the bytes. One connection carries many
concurrent callers, pipelined; blocking commands get connections of their own.

* ``acbus.address``: where the bus is and how to authenticate (also used by the
  synchronous client, so it imports nothing of trio);
* ``acbus.connection``: one socket shared by many tasks;
* ``acbus.link``: a daemon's lasting, reconnecting link (``Bus``).
"""
