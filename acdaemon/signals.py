"""What signals mean to a daemon: SIGTERM and SIGINT stop it, SIGHUP reloads its config."""

import logging
import signal
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)


async def handle_signals(stop: Callable[[], None], reload: Callable[[], None]) -> None:
    """Call ``stop`` for each SIGTERM or SIGINT and ``reload`` for each SIGHUP, until cancelled."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s received", signal.Signals(signum).name)
            if signum == signal.SIGHUP:
                reload()
            else:
                stop()
