"""Telling systemd (or the grid) how a daemon is doing: the ``sd_notify`` protocol.

Under ``Type=notify`` systemd sets ``NOTIFY_SOCKET``; the daemon sends
``READY=1`` once it serves, ``WATCHDOG=1`` regularly while its event loop
runs (when ``WatchdogSec`` is set, systemd restarts a daemon that stops
pinging), ``RELOADING=1`` then ``READY=1`` around a reload (SIGHUP),
``STOPPING=1`` when it shuts down, and ``STATUS=...`` lines that
``systemctl status`` shows. Without ``NOTIFY_SOCKET`` every call does nothing.
"""

import logging
import os
import socket
import time
from collections.abc import Mapping

import trio

log = logging.getLogger(__name__)

#: What systemd hands the daemon alone: a job or a handler that inherited it could speak for the daemon.
DAEMON_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def child_environment() -> dict[str, str]:
    """The daemon's environment for the processes it starts: without ``DAEMON_ONLY``.

    (The daemon keeps them: the agent's ``restart`` execs a new agent that must notify too.)
    """
    return {key: value for key, value in os.environ.items() if key not in DAEMON_ONLY}


class Notifier:
    """Tells systemd how the daemon is doing (``sd_notify``); does nothing without ``NOTIFY_SOCKET``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        path = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._socket: socket.socket | None = None
        self.watchdog_interval: float | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000 / 2  # ping twice per period

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *fields: str) -> None:
        if not self._address:
            return
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self._address, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self, status: str = "reloading") -> None:
        """A reload begins; ``ready`` says when it is over."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    async def keep_watchdog(self) -> None:
        """Ping the watchdog for as long as the event loop runs (forever, if there is none)."""
        if self.watchdog_interval is None:
            await trio.sleep_forever()
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)
