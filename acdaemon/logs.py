"""Logging for daemons: one line per event, journald-friendly under systemd.

When stderr is systemd's journal (``JOURNAL_STREAM`` names it), lines carry
no timestamp (the journal adds its own) and start with the syslog priority
(``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug), so that
``journalctl -p warning`` finds them. Every line of a multi-line record (a
traceback) gets the prefix, so none of it is lost to a lower priority.
Anywhere else, lines start with a timestamp.
"""

import logging
import os
import sys
from typing import Protocol

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: syslog priorities of the logging levels (sd-daemon(3)).
_PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """Log lines the journal shows well: a syslog priority prefix, no timestamp of our own."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = next((number for level, number in _PRIORITIES if record.levelno >= level), 7)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def writes_to_journal(stream: _HasFileno | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is connected to systemd's journal."""
    stream = sys.stderr if stream is None else stream
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not inode:
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{status.st_dev}:{status.st_ino}" == f"{device}:{inode}"


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level`` (one of ``LEVELS``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter() if writes_to_journal() else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
