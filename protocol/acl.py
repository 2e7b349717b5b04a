"""What an agent may do on the bus, as Redis ACL rules.

An agent needs only its own keys and channels (``ac:agent:<gid>:<nid>:*``)
and the few commands it uses on them. With such a user a compromised node can
neither read another agent's commands, nor submit commands, nor write the
keys clients read.
"""

from protocol.keys import (
    BUS_EPOCH,
    CMDS_QUEUE,
    CONTROLLER_ALIVE,
    DEAD_LETTER_COUNT,
    JOB_CHANNEL_PREFIX,
    JOB_RESULTS_PREFIX,
    JOBLOG,
    RESULT_QUEUE_PREFIX,
    AgentKeys,
)

#: Every Redis command an agent sends (the connection handshake included).
AGENT_COMMANDS = (
    "auth", "hello", "select", "client|setname", "ping",       # connecting
    "role", "wait",                                           # Sentinel: is it the master; writes confirmed
    "blmove", "lmove", "lrange", "lrem",                      # taking commands (queue -> inflight)
    "multi", "exec", "discard", "rpush", "set", "get",        # the outbox transaction, outseq, heartbeat
    "publish",                                                # the bell
    "subscribe", "lpop", "llen", "pexpire", "del", "exists",  # tunnels: bells, orders, chunks, leases, lifetimes
    "sadd", "srem", "smembers",                               # tunnels: the streams the agent holds
)

#: Prefix of the Redis user names of agents.
AGENT_USER_PREFIX = "agent-"


def agent_user(gid: int, nid: int) -> str:
    return f"{AGENT_USER_PREFIX}{gid}-{nid}"


def parse_agent_user(user: str) -> tuple[int, int] | None:
    """``agent-1-7`` -> ``(1, 7)``; ``None`` for a user that is not an agent's."""
    if not user.startswith(AGENT_USER_PREFIX):
        return None
    gid, _, nid = user[len(AGENT_USER_PREFIX):].partition("-")
    return (int(gid), int(nid)) if gid.isdigit() and nid.isdigit() else None


def agent_rules(gid: int, nid: int) -> list[str]:
    """``ACL SETUSER`` rules (without the password) for agent ``gid:nid``."""
    prefix = AgentKeys(gid, nid).prefix
    return ["reset", "on", f"~{prefix}*", "resetchannels", f"&{prefix}*", "-@all",
            *(f"+{command}" for command in AGENT_COMMANDS)]


#: Every Redis command the client library and ``ac`` send.
CLIENT_COMMANDS = (
    "auth", "hello", "select", "client|setname", "ping",
    "role", "wait",                            # Sentinel: is it the master; a command's acceptance confirmed
    "rpush",                                   # cmds_queue
    "evalsha", "eval", "script|load", "time",  # sending through acclient/send.lua (stamped with the bus's clock)
    "get", "exists",                           # the bus epoch, whether a controller is alive
    "llen", "acl|whoami",                      # ac doctor: the depth of cmds_queue, who we are
    "blpop", "lpop", "lrange",                 # cmds_queue_<id>, joblog
    "hget", "hgetall", "hkeys",                # jobresult:<id>
    "subscribe", "unsubscribe",                # ac:jobs:<id>:updates|msgs
)

#: Prefix of the Redis user names of clients.
CLIENT_USER_PREFIX = "client-"


def client_user(name: str) -> str:
    """The Redis user of client ``name``: ``client-<name>``; ValueError for a name that cannot be one."""
    if not name or len(name) > 64 or not all(char.isascii() and (char.isalnum() or char in "-_.") for char in name):
        raise ValueError(f"client name {name!r}: use 1 to 64 letters, digits, '-', '_' or '.'")
    return CLIENT_USER_PREFIX + name


def parse_client_user(user: str) -> str | None:
    """``client-alice`` -> ``alice``; ``None`` for a user that is not a client's."""
    name = user[len(CLIENT_USER_PREFIX):] if user.startswith(CLIENT_USER_PREFIX) else ""
    return name or None


def client_rules() -> list[str]:
    """``ACL SETUSER`` rules (without the password) for a client: send commands, read their results."""
    keys = [CMDS_QUEUE, RESULT_QUEUE_PREFIX + "*", JOB_RESULTS_PREFIX + "*", JOBLOG, BUS_EPOCH, CONTROLLER_ALIVE,
            DEAD_LETTER_COUNT]
    return ["reset", "on", *(f"~{key}" for key in keys), "resetchannels", f"&{JOB_CHANNEL_PREFIX}*", "-@all",
            *(f"+{command}" for command in CLIENT_COMMANDS)]
