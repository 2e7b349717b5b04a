"""Helpers for scripts the agent runs: write level messages on stdout.

    from extensions import emit
    emit.message(emit.USER_MESSAGE, "backup started")
    emit.stat("files", 1, "c")
    emit.result({"files": 120})          # becomes the job's data, level 20

Any program can do the same by printing ``N::text`` lines or ``N:::`` blocks;
this only spares a Python script the formatting.
"""

import json
import sys
from typing import Any, TextIO

from protocol.levels import (  # noqa: F401 - re-exported for scripts
    CRITICAL,
    DEBUG,
    LOG,
    OPERATOR_MESSAGE,
    OPS_ERROR,
    RESULT_JSON,
    STATSD,
    STRUCTURED_LOG,
    USER_MESSAGE,
    WARNING,
)
from protocol.parser import BLOCK_END


def message(level: int, text: str, stream: TextIO | None = None) -> None:
    """One message; multi-line text goes out as a block."""
    out = stream or sys.stdout
    if "\n" in text:
        out.write(f"{level}:::\n{text}\n{BLOCK_END}\n")
    else:
        out.write(f"{level}::{text}\n")
    out.flush()


def result(value: Any, stream: TextIO | None = None) -> None:
    """The job's result, as level-20 JSON."""
    message(RESULT_JSON, json.dumps(value, indent=None, default=str), stream)


def stat(key: str, value: float | str, kind: str = "g", stream: TextIO | None = None) -> None:
    """A statsd sample (level 10): kind ``g``, ``c``, ``ms``, ``s`` or ``kv``."""
    message(STATSD, f"{key}:{value}|{kind}", stream)
