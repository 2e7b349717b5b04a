"""Logging for daemons: one line per event, journald-friendly under systemd."""

import logging
import os
import sys


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr; without timestamps when systemd's journal adds its own."""
    under_systemd = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    layout = "%(levelname)s %(name)s: %(message)s" if under_systemd else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=layout, stream=sys.stderr, force=True)
