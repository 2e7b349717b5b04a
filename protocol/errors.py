"""The one exception type for input that breaks the wire contract, and how input is echoed in errors."""

#: Characters of an input value that an error message repeats (a 10 MB name is not echoed back whole).
SHOWN_CHARS = 120
#: Characters an error text may have at the most, whatever it echoes.
MAX_ERROR_TEXT = 2000


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters, saying how much was cut."""
    return bounded(repr(value), limit)


def bounded(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut (the last guard of an error text)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


class ProtocolError(ValueError):
    """Input that does not follow the wire contract.

    ``field`` names what was wrong (``"gid"``, ``"args.max_time"``) so the
    message a user sees points at the exact place to fix.
    """

    def __init__(self, field: str, problem: str) -> None:
        problem = bounded(problem)
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


def type_name(value: object) -> str:
    """How a JSON value's type is named in error messages."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object"}
    return names.get(type(value), type(value).__name__)
