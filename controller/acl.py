"""``ac-controller acl``: one Redis user per agent, limited to that agent's keys.

These are one-off administration commands, so they use redis-py directly
rather than the daemon's trio link.
"""

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from protocol.acl import CLIENT_USER_PREFIX, agent_rules, agent_user, client_rules, parse_agent_user
from protocol.keys import GRANTED_ROLES, agent_name


@dataclass(frozen=True, slots=True)
class AgentUser:
    """An agent's Redis user as ``acl list`` shows it."""

    gid: int
    nid: int
    user: str
    enabled: bool
    connections: int


def add_agent(client: redis.Redis, gid: int, nid: int, password: str | None = None,
              roles: Sequence[str] = ()) -> str:
    """Create (or reset) agent ``gid:nid``'s user, granted ``roles`` (it may register with those only);
    return its password."""
    if gid <= 0 or nid <= 0:
        raise ValueError("gid and nid must be positive")
    password = password or secrets.token_hex(24)
    client.execute_command("ACL", "SETUSER", agent_user(gid, nid), *agent_rules(gid, nid), f">{password}")
    client.hset(GRANTED_ROLES, agent_name(gid, nid), json.dumps(sorted(set(roles))))
    return password


def add_client(client: redis.Redis, name: str, password: str | None = None) -> tuple[str, str]:
    """Create (or reset) client user ``client-<name>``; return its user name and password."""
    if not name or not all(char.isalnum() or char in "-_." for char in name):
        raise ValueError(f"client name {name!r}: use letters, digits, '-', '_' or '.'")
    user, password = CLIENT_USER_PREFIX + name, password or secrets.token_hex(24)
    client.execute_command("ACL", "SETUSER", user, *client_rules(), f">{password}")
    return user, password


def revoke_agent(client: redis.Redis, gid: int, nid: int) -> bool:
    """Delete agent ``gid:nid``'s user (and its granted roles); Redis closes its connections at once. False if
    there was none."""
    client.hdel(GRANTED_ROLES, agent_name(gid, nid))
    return bool(client.execute_command("ACL", "DELUSER", agent_user(gid, nid)))


def list_agents(client: redis.Redis) -> list[AgentUser]:
    connected: dict[str, int] = {}
    for connection in client.client_list():
        connected[connection.get("user", "")] = connected.get(connection.get("user", ""), 0) + 1
    users = []
    for rule in client.execute_command("ACL", "LIST"):
        words = (rule.decode() if isinstance(rule, bytes) else rule).split()
        agent = parse_agent_user(words[1]) if len(words) > 1 else None
        if agent is not None:
            users.append(AgentUser(*agent, words[1], "on" in words[2:], connected.get(words[1], 0)))
    return sorted(users, key=lambda user: (user.gid, user.nid))


def config_snippet(url: str, gid: int, nid: int, password: str, roles: Sequence[str] = ()) -> str:
    """The agent2.toml lines that make agent ``gid:nid`` use its user (and the roles it was granted)."""
    return (f'[main]\ngid = {gid}\nnid = {nid}\nroles = {json.dumps(sorted(set(roles)))}\n\n'
            f'[controllers.main]\nurl = "{url}"\n\n[controllers.main.security]\n'
            f'username = "{agent_user(gid, nid)}"\npassword = "{password}"\n')
