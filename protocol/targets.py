"""Beyond one node or one role: lists of nodes, exclusions, hostname patterns, rollouts in waves, expiry.

These fields of a command are new since 2015; a 2015 program never sends them
and never sees a difference.

``targets``   ``["1:1", "2:4"]``: exactly these agents (instead of gid, nid and role)
``exclude``   ``["1:3"]``: none of these (with a role, targets or hosts)
``hosts``     ``"web-*"``: agents whose hostname matches this shell-style pattern
``rollout``   ``{"batch": 5 or "20%", "wait": 10, "max_errors": 1 or "5%"}``: start the targets of a fanout
              in waves (``Rollout``)
``ttl``       seconds: answered ``ERROR`` instead of routed when no controller routed it in time
``queued``    epoch ms on the bus's clock when the command was queued (our client's send script sets it)
"""

import math
from dataclasses import dataclass
from typing import Any

from protocol.errors import ProtocolError, shown, type_name
from protocol.fields import check_non_negative, check_number, check_object, check_string, is_integer

#: Most agents a ``targets`` or ``exclude`` list may name.
MAX_TARGETS = 100_000
MAX_HOSTS_PATTERN = 256


def parse_agent(value: object, field: str) -> tuple[int, int]:
    """``"1:7"`` -> ``(1, 7)``."""
    text = check_string(value, field)
    gid, colon, nid = text.partition(":")
    if not (colon and gid.isdigit() and nid.isdigit() and int(gid) > 0 and int(nid) > 0):
        raise ProtocolError(field, f"expected \"<gid>:<nid>\" with positive numbers, got {shown(text)}")
    return int(gid), int(nid)


def parse_agents(value: object, field: str) -> tuple[tuple[int, int], ...]:
    """A non-empty list of ``"gid:nid"``, each once, in the order given."""
    if not isinstance(value, list) or not value:
        raise ProtocolError(field, f"expected a non-empty list of \"<gid>:<nid>\", got {type_name(value)}")
    if len(value) > MAX_TARGETS:
        raise ProtocolError(field, f"{len(value)} agents: at most {MAX_TARGETS}")
    return tuple(dict.fromkeys(parse_agent(item, f"{field}[{index}]") for index, item in enumerate(value)))


def check_hosts(value: object, field: str = "hosts") -> str:
    pattern = check_string(value, field)
    if not pattern or len(pattern) > MAX_HOSTS_PATTERN:
        raise ProtocolError(field, f"must be a pattern of 1 to {MAX_HOSTS_PATTERN} characters")
    return pattern


def check_ttl(value: object, field: str = "ttl") -> float:
    ttl = check_number(value, field)
    if ttl <= 0:
        raise ProtocolError(field, f"{ttl} is not a number of seconds > 0")
    return ttl


def check_queued(value: object, field: str = "queued") -> int:
    if not is_integer(value) or value < 0:
        raise ProtocolError(field, f"expected epoch milliseconds, got {shown(value)}")
    return value


@dataclass(frozen=True, slots=True)
class Share:
    """A count (``5``) or a share of the targets (``"20%"``)."""

    value: float
    percent: bool

    @classmethod
    def from_wire(cls, value: object, field: str, minimum: int) -> "Share":
        if isinstance(value, str) and value.endswith("%"):
            try:
                share = float(value[:-1])
            except ValueError:
                share = math.nan
            if not 0 < share <= 100:
                raise ProtocolError(field, f"expected a share of the targets like \"20%\" (0-100), got {shown(value)}")
            return cls(share, True)
        if not is_integer(value) or value < minimum:
            raise ProtocolError(field, f"expected a whole number >= {minimum} or a share like \"20%\", "
                                       f"got {shown(value)}")
        return cls(value, False)

    def of(self, targets: int) -> int:
        """How many of ``targets`` that is (a share rounds up)."""
        return math.ceil(targets * self.value / 100) if self.percent else int(self.value)

    def to_wire(self) -> int | str:
        return f"{self.value:g}%" if self.percent else int(self.value)


@dataclass(frozen=True, slots=True)
class Rollout:
    """Start a fanout's targets ``batch`` at a time; the next wave ``wait`` seconds after the last one ended;
    no further wave once more than ``max_errors`` targets failed (every target not started ends ``SKIPPED``)."""

    batch: Share
    wait: float = 0.0
    max_errors: Share | None = None  # None: no limit

    @classmethod
    def from_wire(cls, value: object, field: str = "rollout") -> "Rollout":
        fields = check_object(value, field)
        unknown = sorted(set(fields) - {"batch", "wait", "max_errors"})
        if unknown:
            raise ProtocolError(f"{field}.{unknown[0]}", "unknown key (known: batch, max_errors, wait)")
        if fields.get("batch") is None:
            raise ProtocolError(f"{field}.batch", "missing: how many targets start at a time")
        batch = Share.from_wire(fields["batch"], f"{field}.batch", minimum=1)
        wait = check_non_negative(fields.get("wait", 0), f"{field}.wait")
        errors = fields.get("max_errors")
        return cls(batch, wait, None if errors is None else Share.from_wire(errors, f"{field}.max_errors", 0))

    def wave_size(self, targets: int) -> int:
        return max(1, self.batch.of(targets))

    def error_budget(self, targets: int) -> float:
        """How many targets may fail before no further wave starts (``inf``: no limit)."""
        return math.inf if self.max_errors is None else math.floor(
            targets * self.max_errors.value / 100) if self.max_errors.percent else self.max_errors.value

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"batch": self.batch.to_wire(), "wait": self.wait}
        if self.max_errors is not None:
            wire["max_errors"] = self.max_errors.to_wire()
        return wire
