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
import time
from collections.abc import Hashable
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


class LogBudget:
    """At most ``burst`` lines per ``interval`` seconds about each subject (say, one agent's dropped results): a
    node that writes junk in a loop must not flood the log, and the journal, too. The lines held back are
    counted, and the next line about that subject says how many there were; the daemons' counters count
    every event either way."""

    def __init__(self, logger: logging.Logger, burst: int = 5, interval: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self._spent: dict[Hashable, tuple[float, int, int]] = {}  # subject -> window start, lines said, held back

    def log(self, subject: Hashable, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        start, said, held = self._spent.get(subject, (now, 0, 0))
        if now - start >= self.interval:
            start, said = now, 0
        if said >= self.burst:
            self._spent[subject] = (start, said, held + 1)
            return
        self._spent[subject] = (start, said + 1, 0)
        if held:
            message = f"{message} (and {held} such lines held back since the last)"
        self.logger.log(level, message, *args)
