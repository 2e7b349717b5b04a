"""A TCP echo server and a checked transfer through it, for tunnel tests, benchmarks and demos."""

import hashlib
import os
import socket
import socketserver
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


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # the default 5 overflows with many connections at once


class EchoServer:
    """Echoes every byte back and, when the client shuts down writing, does the same (half-close)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Echo)
        self.port = self._server.server_address[1]

    def __enter__(self) -> "EchoServer":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Transfer:
    sent: int
    received: int
    seconds: float
    intact: bool  # what came back is byte for byte what was sent


def echo_through(port: int, size: int, timeout: float = 60.0) -> Transfer:
    """Send ``size`` random bytes to an echo server at loopback ``port`` while reading them back,
    then shut down writing and read to the end; compare checksums."""
    block = os.urandom(_BLOCK)
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
        remaining = size
        while remaining:
            piece = block[:min(remaining, _BLOCK)]
            sock.sendall(piece)
            sent.update(piece)
            remaining -= len(piece)
        sock.shutdown(socket.SHUT_WR)
        reader.join(timeout)
        seconds = time.perf_counter() - started
    return Transfer(size, count[0], seconds, count[0] == size and sent.digest() == received.digest())
