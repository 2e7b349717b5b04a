"""Level-10 statsd lines: ``key:value|type``.

Types: ``g`` gauge (``+N``/``-N`` adjust it), ``c`` counter (an optional
``|@rate`` sample rate scales it), ``ms`` timer (averaged), ``s`` set
(distinct values counted), ``kv`` key/value (last value wins).
"""

from dataclasses import dataclass
from typing import Literal, cast

from protocol.errors import ProtocolError, shown

StatType = Literal["g", "c", "ms", "s", "kv"]
STAT_TYPES: frozenset[str] = frozenset({"g", "c", "ms", "s", "kv"})


@dataclass(frozen=True, slots=True)
class StatsdSample:
    """One parsed level-10 line."""

    key: str
    type: StatType
    value: float | str
    relative: bool = False  # a gauge given as +N or -N adjusts instead of setting


def parse_statsd(line: str) -> StatsdSample:
    """One statsd sample, or ``ProtocolError`` saying what is wrong with the line."""
    key, colon, rest = line.strip().partition(":")
    if not colon or not key:
        raise ProtocolError("statsd", f"{shown(line)} is not 'key:value|type'")
    value_text, bar, rest = rest.partition("|")
    if not bar:
        raise ProtocolError("statsd", f"{shown(line)} has no '|type'")
    stat_type, _, rate_text = rest.partition("|")
    if stat_type not in STAT_TYPES:
        raise ProtocolError("statsd", f"{shown(line)}: unknown type {shown(stat_type)} "
                                      "(expected one of g, c, ms, s, kv)")
    kind = cast(StatType, stat_type)  # checked against STAT_TYPES just above
    if stat_type in ("s", "kv"):
        return StatsdSample(key, kind, value_text)
    try:
        value = float(value_text)
    except ValueError:
        raise ProtocolError("statsd", f"{shown(line)}: value {shown(value_text)} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ProtocolError("statsd", f"{shown(line)}: value must be finite")
    if rate_text:
        if stat_type != "c" or not rate_text.startswith("@"):
            raise ProtocolError("statsd", f"{shown(line)}: only counters take a '|@rate'")
        try:
            rate = float(rate_text[1:])
        except ValueError:
            rate = 0.0
        if not 0 < rate <= 1:
            raise ProtocolError("statsd", f"{shown(line)}: sample rate must be in (0, 1]")
        value /= rate
    relative = stat_type == "g" and value_text[:1] in "+-"
    return StatsdSample(key, kind, value, relative)
