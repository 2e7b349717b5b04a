"""A result the bus popped for a client whose reply never reached it is not lost.

That happens when the connection breaks between the pop and its reply: Redis killed after writing the pop
to its append-only file and before answering, a network cut. The client connects again and waits on, but
the result is no longer in its queue and no agent sends it again. Its wait was cut off, so it looks in the
command's job results for a final result it never received. Injected with a proxy between the client and
Redis that drops the first reply to a ``BLPOP`` that carries a result, and closes the connection."""

import contextlib
import socket
import threading

from support import TIMEOUT

import acclient


class ReplyDropper:
    """A TCP proxy to Redis; once ``armed``, the first reply to a ``BLPOP`` that carries a result (an array of
    two: queue and value) is dropped and the client's connection closed, as if the bus had died right then."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            waiting = threading.Event()  # this connection sent a BLPOP while armed
            threading.Thread(target=self._pump_up, args=(client, server, waiting), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(server, client, waiting), daemon=True).start()

    def _pump_up(self, client: socket.socket, server: socket.socket, waiting: threading.Event) -> None:
        while data := _receive(client):
            if self.armed.is_set() and b"BLPOP" in data.upper():
                waiting.set()
            if not _send(server, data):
                break
        _close(server)

    def _pump_down(self, server: socket.socket, client: socket.socket, waiting: threading.Event) -> None:
        while data := _receive(server):
            if waiting.is_set() and data.startswith(b"*2\r\n") and self.armed.is_set():
                self.armed.clear()
                self.dropped.set()
                break
            if not _send(client, data):
                break
        _close(client)
        _close(server)


def _receive(end: socket.socket) -> bytes:
    try:
        return end.recv(65536)
    except OSError:
        return b""


def _send(end: socket.socket, data: bytes) -> bool:
    try:
        end.sendall(data)
    except OSError:
        return False
    return True


def _close(end: socket.socket) -> None:
    with contextlib.suppress(OSError):
        end.shutdown(socket.SHUT_RDWR)
    end.close()


def test_a_result_whose_reply_was_lost_with_the_connection_is_taken_from_the_job_results(grid):
    dropper = ReplyDropper(grid.address.host, grid.address.port)
    try:
        through_a_dropper(dropper)
    finally:
        dropper.close()


def through_a_dropper(dropper: ReplyDropper) -> None:
    client = acclient.Client("127.0.0.1", dropper.port)
    cmd = client.cmd(1, 1, "ping", None)
    dropper.armed.set()
    job = cmd.get_next_result(TIMEOUT)
    assert dropper.dropped.is_set(), "the proxy dropped the reply that carried the result"
    assert (job.id, job.state, job.data) == (cmd.id, "SUCCESS", '"pong"')
    assert cmd.noblock_get_next_result() is None, "taken once"

    dropper.dropped.clear()
    single = client.cmd(1, 1, "ping", None)  # its one result lost: the look in the job results ends it
    dropper.armed.set()
    assert [job.id for job in client.iter_results([single], timeout=TIMEOUT)] == [single.id]
    assert dropper.dropped.is_set() and single.report() == {(1, 1): "returned"}

    dropper.dropped.clear()
    fanout = client.execute(None, None, "sleep", ["0.5"], role="web", fanout=True)  # answered while it waits
    dropper.armed.set()
    results = list(client.iter_results([fanout], timeout=TIMEOUT))
    assert dropper.dropped.is_set(), "the proxy dropped a reply that carried a result"
    assert sorted((job.gid, job.nid, job.state) for job in results) == [(1, 1, "SUCCESS"), (1, 2, "SUCCESS")]
    assert fanout.report() == {(1, 1): "returned", (1, 2): "returned"}
