"""Message levels and level sets (``"*"``, ``"1,2,6-9"`` or a list of ints)."""

from collections.abc import Iterable

from protocol.errors import ProtocolError, shown, type_name
from protocol.fields import is_integer

STDOUT = 1
STDERR = 2
USER_MESSAGE = 3
OPERATOR_MESSAGE = 4
LOG = 5
STRUCTURED_LOG = 6
WARNING = 7
OPS_ERROR = 8
CRITICAL = 9
STATSD = 10
DEBUG = 11
RESULT_JSON = 20
RESULT_YAML = 21
RESULT_TOML = 22
RESULT_HRD = 23
JOB_JSON = 30

#: The last message at one of these levels becomes the job's ``data``.
RESULT_LEVELS = frozenset({RESULT_JSON, RESULT_YAML, RESULT_TOML, RESULT_HRD, JOB_JSON})

#: Levels are small non-negative integers; this bounds what a level set may name.
MAX_LEVEL = 255

ALL_LEVELS = frozenset(range(MAX_LEVEL + 1))

LevelSpec = str | Iterable[int]


def parse_levels(spec: object, field: str = "levels") -> frozenset[int]:
    """Turn ``"*"``, ``"1,2,6-9"`` or ``[1, 2]`` into the set of levels it names."""
    if isinstance(spec, str):
        return _parse_level_string(spec, field)
    if isinstance(spec, list | tuple | set | frozenset):
        return frozenset(_check_level(item, field) for item in spec)
    raise ProtocolError(field, f"expected '*', a string like '1,2,6-9' or a list of ints, got {type_name(spec)}")


def format_levels(levels: frozenset[int]) -> str:
    """The shortest string spelling of a level set (``"*"`` for all)."""
    if levels == ALL_LEVELS:
        return "*"
    ranges: list[tuple[int, int]] = []
    for level in sorted(levels):
        if ranges and ranges[-1][1] == level - 1:
            ranges[-1] = (ranges[-1][0], level)
        else:
            ranges.append((level, level))
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _parse_level_string(spec: str, field: str) -> frozenset[int]:
    text = spec.strip()
    if text == "*":
        return ALL_LEVELS
    if not text:
        raise ProtocolError(field, "empty level set: use '*' for all levels")
    levels: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if dash:
            first, last = _level_number(low, spec, field), _level_number(high, spec, field)
            if first > last:
                raise ProtocolError(field, f"range {shown(part.strip())} runs backwards in {shown(spec)}")
            levels.update(range(first, last + 1))
        else:
            levels.add(_level_number(low, spec, field))
    return frozenset(levels)


def _level_number(text: str, spec: str, field: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise ProtocolError(field, f"{shown(text)} is not a level number in {shown(spec)} (expected e.g. '1,2,6-9' "
                                   "or '*')")
    return _check_level(int(text), field)


def _check_level(value: object, field: str) -> int:
    if not is_integer(value):
        raise ProtocolError(field, f"level {shown(value)} is not an integer")
    if not 0 <= value <= MAX_LEVEL:
        raise ProtocolError(field, f"level {value} is outside 0-{MAX_LEVEL}")
    return value
