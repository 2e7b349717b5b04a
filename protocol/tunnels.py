"""Tunnels on the wire: the limits, the bells and the messages.

A tunnel connection (a *stream*) joins a socket the agent accepted on its
tunnel's port to a socket the gateway opened to ``ip:remote``. Each end
keeps two lists under its own prefix: ``out`` (chunks it read from its
socket) and ``in`` (chunks to write to it). A controller moves chunks from
one end's ``out`` to the other's ``in``. Chunks are raw bytes; an empty chunk
means the sender shut down writing (half-close).

Agents and controllers wake each other with short pub/sub *bells* (the
channels ``tunnel:up`` and ``tunnel:down`` of each agent) and exchange
*messages* (JSON) through two lists: ``tunnel:requests`` (agent ->
controllers) and ``tunnel:orders`` (controllers -> agent). The whole design
is in ``docs/tunnels.md``.
"""

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from protocol.errors import ProtocolError, type_name
from protocol.fields import is_integer
from protocol.jsontext import compact

#: Largest chunk one list element carries.
CHUNK_BYTES = 256 * 1024
#: Chunks a list may hold before its writer waits: bounds what one direction keeps in Redis.
WINDOW = 4
#: The chunk that ends one direction of a stream (its writer shut down writing).
FIN = b""
#: Lifetime of every list an agent or a controller writes for tunnels, renewed while in use.
KEY_TTL_MS = 60_000
#: Seconds a new connection waits for a controller to take it.
OPEN_TIMEOUT = 10.0
#: Seconds a gateway tries to reach ``ip:remote``.
CONNECT_TIMEOUT = 10.0
#: Seconds ``hubble_open_tunnel`` waits for a controller to check the gateway.
PROBE_TIMEOUT = 10.0

#: The gateway that names the controller's own host.
CONTROLLER_GATEWAY = "controller"

#: The agent commands that open, close and list tunnels.
OPEN_COMMAND, CLOSE_COMMAND, LIST_COMMAND = "hubble_open_tunnel", "hubble_close_tunnel", "hubble_list_tunnels"

_STREAM_ID = re.compile(r"[0-9a-f]{32}")
_GATEWAY = re.compile(r"([1-9][0-9]{0,9})\.([1-9][0-9]{0,9})")
_MAX_HOST = 255
_MAX_REASON = 1000


def new_stream_id() -> str:
    return uuid.uuid4().hex


def check_stream_id(value: object, field: str = "stream") -> str:
    """A stream id becomes part of key names: only 32 lowercase hex digits pass."""
    if not isinstance(value, str) or not _STREAM_ID.fullmatch(value):
        raise ProtocolError(field, f"expected 32 hex digits, got {value!r:.80}")
    return value


def parse_gateway(value: object, field: str = "gateway") -> tuple[int, int] | None:
    """``"<gid>.<nid>"`` -> ``(gid, nid)``; ``"controller"`` -> ``None``."""
    if value == CONTROLLER_GATEWAY:
        return None
    match = _GATEWAY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ProtocolError(field, f'expected "<gid>.<nid>" or "{CONTROLLER_GATEWAY}", got {value!r:.80}')
    return int(match[1]), int(match[2])


def gateway_name(gid: int, nid: int) -> str:
    """How a gateway agent is named in tunnel commands: ``"1.7"`` (the 2015 spelling)."""
    return f"{gid}.{nid}"


@dataclass(frozen=True, slots=True)
class TunnelSpec:
    """The four fields of ``hubble_open_tunnel`` / ``hubble_close_tunnel``."""

    local: int
    gateway: str
    ip: str
    remote: int

    @classmethod
    def from_wire(cls, data: dict[str, Any], prefix: str = "data") -> "TunnelSpec":
        unknown = sorted(set(data) - {"local", "gateway", "ip", "remote"})
        if unknown:
            raise ProtocolError(f"{prefix}.{unknown[0]}", "unknown key (known: gateway, ip, local, remote)")
        local = _port(data.get("local", 0), f"{prefix}.local", allow_zero=True)
        gateway = data.get("gateway")
        parse_gateway(gateway, f"{prefix}.gateway")
        assert isinstance(gateway, str)  # parse_gateway refuses anything but a string
        return cls(local, gateway, check_host(data.get("ip"), f"{prefix}.ip"),
                   _port(data.get("remote"), f"{prefix}.remote", allow_zero=False))

    def to_wire(self) -> dict[str, Any]:
        return {"local": self.local, "gateway": self.gateway, "ip": self.ip, "remote": self.remote}


def grant(gateway: str, ip: str, remote: int) -> str:
    """A field of ``keys.tunnel_grants``: the target a client let an agent reach through a gateway."""
    return f"{gateway}|{ip}|{remote}"


def check_host(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(field, f"expected an address, got {type_name(value) if not value else repr(value)}")
    if len(value) > _MAX_HOST or any(ord(char) <= 32 for char in value):
        raise ProtocolError(field, f"not a usable address: {value!r:.80}")
    return value


def _port(value: object, field: str, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    if not is_integer(value) or not low <= value <= 65535:
        raise ProtocolError(field, f"expected a port number {low}-65535, got {value!r:.80}")
    return value


#: What a controller puts in an agent's command queue when it has tunnel orders for it and nobody heard
#: the bell: an agent listens to its tunnel channel only while it has tunnels (no connection spent on them
#: otherwise), so its intake, always there, wakes it. Not a command: the agent takes it off at once.
WAKE_UP = b"ac:tunnel:wake-up"


# -- bells: short pub/sub payloads that only wake the other side --------------------------------

#: Up: the agent's request list has something.
REQUESTS = "requests"
#: Up: stream <id> changed (data written or read, or a message about it): relay it.
RELAY = "relay"
#: Up: the agent gave stream <id> up; the rest of the payload says why.
RESET = "reset"
#: Down: the agent's order list has something.
ORDERS = "orders"
#: Down: stream <id> has chunks in the agent's ``in`` list.
DATA = "data"
#: Down: stream <id>'s ``out`` list has room again.
ROOM = "room"


def bell(kind: str, stream: str = "", reason: str = "") -> str:
    return " ".join(part for part in (kind, stream, reason[:_MAX_REASON]) if part)


def parse_bell(payload: bytes) -> tuple[str, str, str]:
    """``(kind, stream, reason)``; a malformed bell raises ``ProtocolError``."""
    text = payload.decode("utf-8", "replace")
    kind, _, rest = text.partition(" ")
    if kind in (REQUESTS, ORDERS):
        return kind, "", ""
    if kind not in (RELAY, RESET, DATA, ROOM):
        raise ProtocolError("bell", f"unknown kind {kind!r:.40}")
    stream, _, reason = rest.partition(" ")
    # The reason comes from an agent and ends up in logs and in another agent's order: keep it short and plain.
    return kind, check_stream_id(stream), "".join(c if c.isprintable() else "?" for c in reason[:_MAX_REASON])


# -- messages: JSON objects in the request and order lists ---------------------------------------

#: Request: is ``gateway`` usable? Answered by a ``probe`` order with the same ``probe`` id.
PROBE = "probe"
#: Request: relay stream ``stream`` to ``gateway``, which connects it to ``ip:remote``.
OPEN = "open"
#: Order to a gateway: connect stream ``stream`` to ``ip:remote``.
CONNECT = "connect"
#: Order: stream ``stream`` is over (``reason`` says why); let go of it.
ABORT = "reset"

_FIELDS: dict[tuple[str, object], dict[str, type | tuple[type, ...]]] = {
    ("request", PROBE): {"probe": str, "gateway": str},
    ("request", OPEN): {"stream": str, "gateway": str, "ip": str, "remote": int},
    ("order", PROBE): {"probe": str, "error": (str, type(None))},
    ("order", CONNECT): {"stream": str, "ip": str, "remote": int, "peer": str},
    ("order", ABORT): {"stream": str, "reason": str},
}


def encode(op: str, **fields: Any) -> str:
    return compact({"op": op, **fields})


def decode_request(raw: bytes) -> dict[str, Any]:
    return _decode(raw, "request")


def decode_order(raw: bytes) -> dict[str, Any]:
    return _decode(raw, "order")


def _decode(raw: bytes, what: str) -> dict[str, Any]:
    """A message, its fields checked (types, stream ids, gateways, addresses, ports)."""
    try:
        message = json.loads(raw)
    except ValueError:
        raise ProtocolError(what, f"not JSON: {raw[:80]!r}") from None
    if not isinstance(message, dict):
        raise ProtocolError(what, f"expected an object, got {type_name(message)}")
    fields = _FIELDS.get((what, message.get("op")))
    if fields is None:
        raise ProtocolError(f"{what}.op", f"unknown: {message.get('op')!r:.40}")
    for name, kind in fields.items():
        value = message.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ProtocolError(f"{what}.{name}", f"expected {type_name(kind())}, got {type_name(value)}"
                                if isinstance(kind, type) else f"unexpected {type_name(value)}")
    if "stream" in fields:
        check_stream_id(message["stream"], f"{what}.stream")
    if "gateway" in fields:
        parse_gateway(message["gateway"], f"{what}.gateway")
    if "ip" in fields:
        check_host(message["ip"], f"{what}.ip")
        _port(message["remote"], f"{what}.remote", allow_zero=False)
    for name in ("probe", "reason", "error", "peer"):
        if isinstance(message.get(name), str) and len(message[name]) > _MAX_REASON:
            raise ProtocolError(f"{what}.{name}", "too long")
    return message
