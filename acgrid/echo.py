"""TCP servers and checked transfers through them, for tunnel tests, benchmarks and demos.

``EchoServer`` sends every byte back; ``DigestServer`` reads to the end and answers the sha256 of
what it read (a one-way transfer, proven whole). Both shut down writing once the client did.
"""

import hashlib
import os
import socket
import socketserver
import statistics
import threading
import time
from dataclasses import dataclass

_BLOCK = 1 << 20


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(_BLOCK):
                self.request.sendall(data)
            self.request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client went away: nothing to echo to


class _Digest(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        digest = hashlib.sha256()
        try:
            while data := self.request.recv(_BLOCK):
                digest.update(data)
            self.request.sendall(digest.hexdigest().encode())
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # the default 5 overflows with many connections at once


class _Serving:
    handler: type[socketserver.BaseRequestHandler]

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), self.handler)
        self.port = self._server.server_address[1]

    def __enter__(self) -> "_Serving":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class EchoServer(_Serving):
    """Echoes every byte back and, when the client shuts down writing, does the same (half-close)."""

    handler = _Echo


class DigestServer(_Serving):
    """Reads until the client shuts down writing, then answers the sha256 (hex) of what it read."""

    handler = _Digest


@dataclass
class Transfer:
    """What a tunnel transfer test sent and got back, with the time it took."""

    size: int  # bytes sent (and, when intact, received)
    seconds: float
    intact: bool  # what arrived is byte for byte what was sent

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6


def echo_through(port: int, size: int, timeout: float = 60.0) -> Transfer:
    """Send ``size`` random bytes to an echo server at loopback ``port`` while reading them back,
    then shut down writing and read to the end; compare checksums."""
    sent, received = hashlib.sha256(), hashlib.sha256()
    count = [0]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:

        def read() -> None:
            while data := sock.recv(_BLOCK):
                received.update(data)
                count[0] += len(data)

        reader = threading.Thread(target=read, daemon=True)
        started = time.perf_counter()
        reader.start()
        _send(sock, size, sent)
        reader.join(timeout)
        seconds = time.perf_counter() - started
    return Transfer(size, seconds, count[0] == size and sent.digest() == received.digest())


def send_through(port: int, size: int, timeout: float = 60.0) -> Transfer:
    """Send ``size`` random bytes one way to a digest server at loopback ``port``; timed until its answer."""
    sent = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.perf_counter()
        _send(sock, size, sent)
        answer = b"".join(iter(lambda: sock.recv(100), b""))
        seconds = time.perf_counter() - started
    return Transfer(size, seconds, answer == sent.hexdigest().encode())


def round_trips(port: int, count: int, size: int = 64, timeout: float = 60.0) -> list[float]:
    """Seconds of each of ``count`` round trips of a ``size``-byte message to an echo server."""
    message = os.urandom(size)
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(message)
            got = 0
            while got < size:
                data = sock.recv(size - got)
                if not data:
                    raise ConnectionError("the echo server closed the connection")
                got += len(data)
            times.append(time.perf_counter() - started)
    return times


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=100)[int(fraction * 100) - 1] if len(values) > 1 else values[0]


def _send(sock: socket.socket, size: int, digest: "hashlib._Hash") -> None:
    block = os.urandom(_BLOCK)
    remaining = size
    while remaining:
        piece = block[:min(remaining, _BLOCK)]
        sock.sendall(piece)
        digest.update(piece)
        remaining -= len(piece)
    sock.shutdown(socket.SHUT_WR)
