"""The one exception type for input that breaks the wire contract."""


class ProtocolError(ValueError):
    """Input that does not follow the wire contract.

    ``field`` names what was wrong (``"gid"``, ``"args.max_time"``) so the
    message a user sees points at the exact place to fix.
    """

    def __init__(self, field: str, problem: str) -> None:
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
