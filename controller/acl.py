"""``ac-controller acl``: one Redis user per agent, limited to that agent's keys, and one per client.

These are one-off administration commands, so they use redis-py directly
rather than the daemon's trio link.

Redis keeps users in memory; they survive a Redis restart only in its
``aclfile``, written by ``ACL SAVE``. So the command line first checks that
the bus has an aclfile (``require_aclfile``), and saves after every change
(``save``): a user it made is never lost to a restart. Beside each user, the
book ``ac:ctl:acl-users`` (``keys.ACL_USERS``) records what it is, when it
was made and by whom; ``list_users`` joins that with Redis's ACL, its
connections, its ACL log and the agents' heartbeats.
"""

import getpass
import json
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import redis

from controller.fleet import check_roles
from protocol.acl import (
    agent_rules,
    agent_user,
    client_rules,
    client_user,
    parse_agent_user,
    parse_client_user,
)
from protocol.keys import ACL_USERS, AGENTS, GRANTED_ROLES, LAST_SEEN, AgentKeys, agent_name
from protocol.presence import Heartbeat

#: How to give a bus an aclfile, for the messages that ask for one (docs/security.md says more).
HOW_TO_SET_ACLFILE = (
    "give Redis an aclfile: in redis.conf, `aclfile /etc/redis/users.acl`; create that file first (it may be empty: "
    "`install -m 0640 -o redis -g redis /dev/null /etc/redis/users.acl`), move any `user` lines of redis.conf into "
    "it (Redis refuses both), restart Redis, then make the controllers' admin user again and `ACL SAVE`"
)


class AclError(Exception):
    """A change of users the bus could not make or could not keep; the message says what to do."""


@dataclass(frozen=True, slots=True)
class AgentUser:
    """An agent's Redis user as ``list_agents`` shows it."""

    gid: int
    nid: int
    user: str
    enabled: bool
    connections: int


@dataclass(frozen=True, slots=True)
class UserRow:
    """One user ``acl list`` shows: every user of the book, and every agent or client user Redis has.

    ``state``: ``on``, ``off``, ``revoked`` (the book remembers it; Redis has no such user any more) or
    ``missing`` (the book made it, Redis has it no more: lost with an aclfile, or deleted by hand).
    ``last_seen`` (epoch s) is the newest sign of it: connected now, its heartbeat (agents), when a controller
    saw it stop beating (agents), or when Redis refused it (its ACL log); ``seen`` says which.
    """

    user: str
    kind: str  # "agent" or "client"
    who: str  # "1:7", or the client's name
    state: str
    connections: int
    roles: tuple[str, ...] | None  # agents: the roles granted (None: no grant on record); clients: None
    host: str | None  # agents: the hostname it registered with, else the inventory's
    created: float | None  # when the user was made or last reset (its password set); None: not in the book
    by: str | None  # who made it (user@host of the command)
    refusals: int  # times Redis refused it, as far as its ACL log remembers (auth, commands, keys, channels)
    last_seen: float | None
    seen: str  # "connected", "heartbeat", "lost", "refused: <reason>" or ""

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "roles": None if self.roles is None else list(self.roles)}


# -- keeping users across a Redis restart ---------------------------------------------------------------------


def acl_file(client: redis.Redis) -> str:
    """The bus's aclfile ("" when it has none)."""
    reply = client.config_get("aclfile")
    return str(reply.get("aclfile", "")) if isinstance(reply, dict) else ""


def require_aclfile(client: redis.Redis, url: str) -> str:
    """The bus's aclfile; AclError saying how to set one when it has none (users made now would be lost)."""
    try:
        path = acl_file(client)
    except redis.ResponseError as exc:
        raise AclError(f"cannot tell whether the bus at {url} keeps its users in an aclfile (CONFIG GET aclfile: "
                       f"{exc}): use the controllers' admin user, or --in-memory to change users that the next "
                       "Redis restart forgets") from None
    if not path:
        raise AclError(f"the bus at {url} has no aclfile, so users made now would vanish when Redis restarts (and "
                       f"every agent would be locked out). To keep them, {HOW_TO_SET_ACLFILE}. To change a "
                       "throwaway bus anyway, add --in-memory")
    return path


def save(client: redis.Redis) -> None:
    """``ACL SAVE``: write every user to the aclfile, where Redis reads them when it starts."""
    try:
        client.execute_command("ACL", "SAVE")
    except redis.ResponseError as exc:
        raise AclError(f"the change is made but NOT saved: ACL SAVE failed ({exc}); Redis's log says why (can it "
                       "write its aclfile?). Fix that and run the command again, or the change is lost when Redis "
                       "restarts") from None


# -- making and removing users --------------------------------------------------------------------------------


def add_agent(client: redis.Redis, gid: int, nid: int, password: str | None = None, roles: Sequence[str] = (),
              hostname: str | None = None) -> str:
    """Create (or reset) agent ``gid:nid``'s user, granted ``roles`` (it may register with those only);
    return its password. ``hostname``: the node's name in an inventory, for ``acl list``."""
    if gid <= 0 or nid <= 0:
        raise ValueError("gid and nid must be positive")
    problem = check_roles(list(roles))
    if problem:
        raise ValueError(problem)
    password = password or secrets.token_hex(24)
    user = agent_user(gid, nid)
    client.execute_command("ACL", "SETUSER", user, *agent_rules(gid, nid), f">{password}")
    entry = _entry("agent", gid=gid, nid=nid, **({"hostname": hostname} if hostname else {}))
    pipe = client.pipeline()
    pipe.hset(GRANTED_ROLES, agent_name(gid, nid), json.dumps(sorted(set(roles))))
    pipe.hset(ACL_USERS, user, entry)
    pipe.execute()
    return password


def add_client(client: redis.Redis, name: str, password: str | None = None) -> tuple[str, str]:
    """Create (or reset) client user ``client-<name>``; return its user name and password."""
    user, password = client_user(name), password or secrets.token_hex(24)
    client.execute_command("ACL", "SETUSER", user, *client_rules(), f">{password}")
    client.hset(ACL_USERS, user, _entry("client", name=name))
    return user, password


def revoke_agent(client: redis.Redis, gid: int, nid: int) -> bool:
    """Delete agent ``gid:nid``'s user (and its granted roles); Redis closes its connections at once. False if
    there was none."""
    client.hdel(GRANTED_ROLES, agent_name(gid, nid))
    return _revoke(client, agent_user(gid, nid))


def revoke_client(client: redis.Redis, name: str) -> bool:
    """Delete client ``name``'s user; Redis closes its connections at once. False if there was none."""
    return _revoke(client, client_user(name))


def user_exists(client: redis.Redis, user: str) -> bool:
    return client.execute_command("ACL", "GETUSER", user) is not None


def _revoke(client: redis.Redis, user: str) -> bool:
    deleted = bool(client.execute_command("ACL", "DELUSER", user))
    raw = client.hget(ACL_USERS, user)
    if raw is not None:  # the book remembers it, revoked: acl list --all shows whether it still knocks
        entry = _decoded(raw)
        entry["revoked"] = round(time.time(), 3)
        client.hset(ACL_USERS, user, json.dumps(entry, sort_keys=True))
    return deleted


def _entry(kind: str, **fields: object) -> str:
    return json.dumps({"kind": kind, "created": round(time.time(), 3), "by": operator(), **fields}, sort_keys=True)


def operator() -> str:
    """Who runs this command, as the book records it: ``user@host``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _decoded(raw: bytes | str | None) -> dict[str, object]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# -- listing ----------------------------------------------------------------------------------------------------


def list_agents(client: redis.Redis) -> list[AgentUser]:
    """The agents' users Redis has, with their connections now."""
    return [AgentUser(*_agent_of(row.user), row.user, row.state == "on", row.connections)
            for row in list_users(client) if row.kind == "agent" and row.state in ("on", "off")]


def list_users(client: redis.Redis, revoked: bool = False) -> list[UserRow]:
    """Every user the book records (``revoked`` ones too if asked) and every agent or client user Redis has."""
    states: dict[str, str] = {}
    for rule in client.execute_command("ACL", "LIST"):
        words = (rule.decode() if isinstance(rule, bytes) else rule).split()
        if len(words) > 1 and (parse_agent_user(words[1]) or parse_client_user(words[1])):
            states[words[1]] = "on" if "on" in words[2:] else "off"
    connections: dict[str, int] = {}
    for connection in client.client_list():
        connections[connection.get("user", "")] = connections.get(connection.get("user", ""), 0) + 1
    refused = _refusals(client)
    book = {_text(user): _decoded(raw) for user, raw in client.hgetall(ACL_USERS).items()}
    granted = {_text(name): raw for name, raw in client.hgetall(GRANTED_ROLES).items()}
    registered = {_text(name): _decoded(raw) for name, raw in client.hgetall(AGENTS).items()}
    lost = {_text(name): raw for name, raw in client.hgetall(LAST_SEEN).items()}
    users = sorted(set(states) | {user for user, entry in book.items()
                                  if user in states or revoked or "revoked" not in entry})
    agents = {user: _agent_of(user) for user in users if parse_agent_user(user)}
    beats = dict(zip(agents, client.mget([AgentKeys(*agent).alive for agent in agents.values()]), strict=True)) \
        if agents else {}
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    rows = []
    for user in users:
        entry = book.get(user, {})
        state = states.get(user) or ("revoked" if "revoked" in entry else "missing")
        signs = [(now, "connected")] if connections.get(user) else []
        count, newest = refused.get(user, (0, None))
        if newest is not None:
            signs.append(newest)
        if user in agents:
            name = agent_name(*agents[user])
            beat = Heartbeat.from_json(beats.get(user)).time
            if beat is not None:
                signs.append((beat / 1000, "heartbeat"))
            if lost.get(name, b"").isdigit():
                signs.append((int(lost[name]) / 1000, "lost"))
            roles = _roles(granted.get(name))
            host = registered.get(name, {}).get("hostname") or entry.get("hostname")
            kind, who = "agent", name
        else:
            roles, host, kind, who = None, None, "client", parse_client_user(user) or user
        last_seen, seen = max(signs) if signs else (None, "")
        rows.append(UserRow(user, kind, who, state, connections.get(user, 0), roles,
                            host if isinstance(host, str) else None, _number(entry.get("created")),
                            _str(entry.get("by")), count, last_seen, seen))
    return sorted(rows, key=lambda row: (row.kind, _agent_of(row.user) if row.kind == "agent" else (0, 0), row.who))


def _refusals(client: redis.Redis) -> dict[str, tuple[int, tuple[float, str] | None]]:
    """Per user: how often Redis refused it (as its ACL log remembers), and the newest refusal (when, why)."""
    try:
        entries: Iterable[dict] = client.acl_log()
    except redis.ResponseError:
        return {}
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    found: dict[str, tuple[int, tuple[float, str] | None]] = {}
    for entry in entries:
        user = _text(entry.get("username", ""))
        count, newest = found.get(user, (0, None))
        when = (now - float(entry.get("age-seconds", 0)), f"refused: {_text(entry.get('reason', ''))}")
        found[user] = (count + int(entry.get("count", 1)), max(newest, when) if newest else when)
    return found


def _agent_of(user: str) -> tuple[int, int]:
    agent = parse_agent_user(user)
    assert agent is not None, user
    return agent


def _roles(raw: bytes | str | None) -> tuple[str, ...] | None:
    try:
        roles = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return tuple(role for role in roles if isinstance(role, str)) if isinstance(roles, list) else None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def config_snippet(url: str, gid: int, nid: int, password: str, roles: Sequence[str] = ()) -> str:
    """The agent2.toml lines that make agent ``gid:nid`` use its user (and the roles it was granted)."""
    return (f'[main]\ngid = {gid}\nnid = {nid}\nroles = {json.dumps(sorted(set(roles)))}\n\n'
            f'[controllers.main]\nurl = "{url}"\n\n[controllers.main.security]\n'
            f'username = "{agent_user(gid, nid)}"\npassword = "{password}"\n')

