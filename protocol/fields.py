"""The checks of single fields read from the wire, in one place.

``check_*`` raise ``ProtocolError`` naming the field and what was wrong with
it; ``is_*`` and ``number_or_none`` are for shapes read tolerantly (a
registration or a heartbeat from an agent of another version), where a bad
field is ignored rather than refused. JSON has one number type, and Python's
``bool`` is an ``int``: a number here is never ``true`` or ``false``.
"""

from typing import TypeGuard

from protocol.errors import ProtocolError, type_name


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float (not a bool, not NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def is_integer(value: object) -> TypeGuard[int]:
    """An int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def number_or_none(value: object) -> int | float | None:
    """``value`` if it is a number, else ``None``."""
    return value if is_number(value) else None


def check_number(value: object, field: str) -> float:
    if not is_number(value):
        raise ProtocolError(field, f"expected a number, got {type_name(value)}")
    return value


def check_non_negative(value: object, field: str) -> float:
    number = check_number(value, field)
    if number < 0:
        raise ProtocolError(field, f"{number} is negative")
    return number


def check_count(value: object, field: str) -> int:
    """A whole number >= 0."""
    if not is_integer(value):
        raise ProtocolError(field, f"expected an integer, got {type_name(value)}")
    if value < 0:
        raise ProtocolError(field, f"{value} is negative")
    return value


def check_string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(field, f"expected a string, got {type_name(value)}")
    return value


def check_name(value: object, field: str, max_length: int) -> str:
    """A non-empty string of at most ``max_length`` characters."""
    text = check_string(value, field)
    if not text or len(text) > max_length:
        raise ProtocolError(field, f"must be 1 to {max_length} characters")
    return text


def check_string_list(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ProtocolError(field, f"expected a list of strings, got {type_name(value)}")
    for index, item in enumerate(value):
        check_string(item, f"{field}[{index}]")
    return tuple(value)


def check_object(value: object, field: str) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError(field, f"expected an object, got {type_name(value)}")
    return value
