"""A private redis-server for a grid or a test, ready when ``start`` returns."""

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from acgrid.processes import READY_TIMEOUT, GridError, spawn, stop_process
from acgrid.tls import TlsFiles


class RedisServer:
    """redis-server on a free loopback port, its files in ``workdir``.

    With ``persistence`` (the default) it keeps an append-only file, fsynced
    every second, as a bus that must lose nothing should (docs/operations.md);
    benchmarks of the limits turn it off. With ``tls``, it listens for TLS
    only and asks clients for a certificate. Readiness comes from
    redis-server itself over a notify socket (its systemd support), not from
    polling.
    """

    def __init__(self, workdir: Path | None = None, extra_args: tuple[str, ...] = (),
                 tls: TlsFiles | None = None, persistence: bool = True, password: str | None = None,
                 replica_of: int | None = None) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="ac-redis-"))
        self.extra_args = extra_args
        self.tls = tls
        self.persistence = persistence
        self.password = password  # the default user's (and the replication link's)
        self.replica_of = replica_of  # the port of the master on 127.0.0.1 this one starts as a replica of
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def start(self) -> str:
        binary = redis_server_binary()
        for _ in range(5):  # a free port can be taken by someone else before redis binds it
            self.port = _free_port()
            if self._spawn(binary):
                return self.url
            assert self.process is not None  # _spawn() started it
            stop_process(self.process)
        raise GridError(f"redis-server did not start; its log:\n{self.log_path.read_text(errors='replace')}")

    def _spawn(self, binary: str) -> bool:
        """Start the process on ``self.port``; whether it said it is ready (systemd's notify protocol)."""
        notify_path = self.workdir / "redis.notify"
        with _notify_socket(notify_path) as notify:
            self.process = spawn(self._argv(binary), self.log_path, {"NOTIFY_SOCKET": str(notify_path)})
            return _await_ready(notify, self.process)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop_process(self.process, signum)
            self.process = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, empty: bool = False) -> None:
        """Start again on the same port (after ``stop``): with the data it persisted, or ``empty``."""
        if empty:
            shutil.rmtree(self.workdir / "appendonlydir", ignore_errors=True)
            (self.workdir / "dump.rdb").unlink(missing_ok=True)
        if not self._spawn(redis_server_binary()):
            raise GridError(f"redis-server did not restart on port {self.port}")

    def _argv(self, binary: str) -> list[str]:
        listen = ["--port", str(self.port)]
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.server_cert),
                      "--tls-key-file", str(self.tls.server_key), "--tls-ca-cert-file", str(self.tls.ca),
                      "--tls-auth-clients", "yes"]
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistence else ["--appendonly",
                                                                                                     "no"]
        if self.tls:
            listen += ["--tls-replication", "yes"]
        if self.password:
            listen += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of:
            listen += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return [binary, *listen, "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", "", *persistence,
                "--maxmemory-policy", "noeviction", "--supervised", "systemd", *self.extra_args]

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise GridError("redis-server not found on PATH: install it (Debian: apt-get install -y "
                        "redis-server) or give the URL of a running Redis with --bus")
    return binary


def redis_server_version() -> str:
    """The version of the redis-server on PATH, e.g. ``7.0.15``."""
    output = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    return next((word[2:] for word in output.split() if word.startswith("v=")), output.strip())


def _free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free now (someone may still take one before it is bound)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@contextlib.contextmanager
def _notify_socket(path: Path):
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        try:
            yield notify
        finally:
            path.unlink(missing_ok=True)


def _await_ready(notify: socket.socket, process: subprocess.Popen) -> bool:
    """Wait for ``READY=1`` (systemd's notify protocol) while the process lives."""
    deadline = time.monotonic() + READY_TIMEOUT
    notify.settimeout(0.25)
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if b"READY=1" in notify.recv(4096):
                return True
        except TimeoutError:
            continue
    return False
