"""Helpers for controller tests: raw commands on the bus, results read back."""

import json
import time
import uuid
from typing import Any

import redis

from protocol import keys

TIMEOUT = 30


def command(cmd: str = "ping", **fields: Any) -> dict[str, Any]:
    """A command JSON as the 2015 client builds it, with a fresh id."""
    return {"id": fields.pop("id", None) or f"t-{uuid.uuid4().hex}", "gid": None, "nid": None, "role": None,
            "fanout": False, "cmd": cmd, "args": {}, "data": "", **fields}


def submit(bus: redis.Redis, *commands: dict[str, Any] | bytes | str) -> None:
    """Push commands (dicts are JSON-encoded, bytes and str go as they are) in one round trip."""
    bus.rpush(keys.CMDS_QUEUE, *(json.dumps(item) if isinstance(item, dict) else item for item in commands))


def results(bus: redis.Redis, command_id: str, count: int = 1, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Pop ``count`` results of a command from ``cmds_queue_<id>``; fail if they do not all come."""
    popped = []
    deadline = time.monotonic() + timeout
    while len(popped) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"command {command_id}: {len(popped)} of {count} results within {timeout} s"
        reply = bus.blpop(keys.result_queue(command_id), timeout=min(max(left, 0.01), 5))
        if reply is not None:
            popped.append(json.loads(reply[1]))
    return popped


def result(bus: redis.Redis, command_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    return results(bus, command_id, 1, timeout)[0]


def run(bus: redis.Redis, cmd: str = "ping", **fields: Any) -> dict[str, Any]:
    """Submit one command and return its (first) result."""
    sent = command(cmd, **fields)
    submit(bus, sent)
    return result(bus, sent["id"])


def controller_command(bus: redis.Redis, name: str, data: Any = "") -> dict[str, Any]:
    """Ask the controller itself; return its answer."""
    payload = data if isinstance(data, str) else json.dumps(data)
    return run(bus, "controller", args={"name": name}, data=payload)


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.02)
