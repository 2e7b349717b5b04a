"""A bus that survives losing its Redis: one master, one replica and three sentinels on loopback ports.

``SentinelTopology`` starts them (``ac-grid --sentinel``, the failover tests and ``bench.failover``): the
replica follows the master, the sentinels watch service ``ac`` and promote the replica when the master
stops answering for ``down_after`` seconds. With ``tls`` every link is TLS (clients, replication, the
sentinels' own); with ``auth`` the data nodes and the sentinels each require a password of their own.
"""

import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import redis

from acbus.address import BusAddress
from acgrid.processes import READY_TIMEOUT, GridError
from acgrid.redis_server import RedisServer, free_ports, redis_server_binary
from acgrid.tls import TlsFiles

#: The service name the sentinels watch.
SERVICE = "ac"
#: Sentinels that must agree that the master is down before one of them fails it over.
QUORUM = 2
#: Seconds without an answer after which the sentinels judge a node down. Sentinel pings every second: at 1 s,
#: one late answer (a loaded machine, or the first ping to a master just promoted) fails over a master that
#: lives, and then the replica that had not caught up yet is promoted. 2 s leaves one ping of slack.
DOWN_AFTER = 2.0
#: Seconds between two looks while the topology forms (nothing announces that a sentinel found its peers).
FORMING_POLL = 0.05
#: The key a replica is shown to prove that it follows its master (deleted at once).
SYNC_PROBE = "acgrid:replica-probe"


class SentinelServer(RedisServer):
    """``redis-server --sentinel`` on ``port``, watching the master at ``master_port``; told its peers and the
    replica up front (each sentinel would find them within a few seconds, through hello messages)."""

    def __init__(self, workdir: Path, port: int, master_port: int, *, tls: TlsFiles | None, password: str | None,
                 node_password: str | None, down_after: float) -> None:
        super().__init__(workdir, tls=tls, persistence=False)
        self.port = port
        self.id = secrets.token_hex(20)
        self.master_port = master_port
        self.sentinel_password = password
        self.node_password = node_password
        self.down_after = down_after
        self.known: list[str] = []  # config lines naming the peers and the replica

    def start(self) -> str:
        if not self._spawn(redis_server_binary()):
            raise GridError(f"redis-server --sentinel did not start on port {self.port}; its log:\n"
                            f"{self.log_path.read_text(errors='replace')}")
        return self.url

    def _argv(self, binary: str) -> list[str]:
        # Sentinel rewrites its config file as it learns (replicas, peers, failovers): each keeps its own.
        lines = [f"port {0 if self.tls else self.port}", "bind 127.0.0.1", f"dir {self.workdir}",
                 f"sentinel myid {self.id}",
                 f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} {QUORUM}",
                 f"sentinel down-after-milliseconds {SERVICE} {round(self.down_after * 1000)}",
                 f"sentinel failover-timeout {SERVICE} {max(3000, round(self.down_after * 6000))}",
                 f"sentinel parallel-syncs {SERVICE} 1", *self.known]
        if self.tls:
            lines += [f"tls-port {self.port}", f"tls-cert-file {self.tls.server_cert}",
                      f"tls-key-file {self.tls.server_key}", f"tls-ca-cert-file {self.tls.ca}",
                      "tls-auth-clients yes", "tls-replication yes"]
        if self.node_password:
            lines.append(f"sentinel auth-pass {SERVICE} {self.node_password}")
        if self.sentinel_password:
            lines += [f"requirepass {self.sentinel_password}", f"sentinel sentinel-pass {self.sentinel_password}"]
        config = self.workdir / "sentinel.conf"
        if not config.exists():
            config.write_text("\n".join(lines) + "\n")
        return [binary, str(config), "--sentinel", "--supervised", "systemd"]


class SentinelTopology:
    """A master, a replica and three sentinels, all on 127.0.0.1; ``url`` is the bus's Sentinel address."""

    def __init__(self, workdir: Path | None = None, *, tls: TlsFiles | None = None, auth: bool = False,
                 down_after: float = DOWN_AFTER, node_args: tuple[str, ...] = ()) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="ac-sentinel-"))
        self.tls = tls
        self.node_password = secrets.token_hex(12) if auth else None
        self.sentinel_password = secrets.token_hex(12) if auth else None
        self.down_after = down_after
        self.node_args = node_args  # more redis-server arguments for both data nodes (min-replicas-to-write ...)
        self.nodes: list[RedisServer] = []
        self.sentinels: list[SentinelServer] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"{'rediss' if self.tls else 'redis'}+sentinel://{hosts}/{SERVICE}/0"

    @property
    def address(self) -> BusAddress:
        """The bus, with the passwords and TLS files a client needs."""
        return BusAddress.from_url(self.url, **self._tls(), password=self.node_password,
                                   sentinel_password=self.sentinel_password)

    def start(self) -> str:
        """Start every process and wait until the sentinels know the replica and one another."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            master = self._node("node-1", None)
            self._node("node-2", master.port)
            self._await_replica_synced(self.nodes[1])
            for index, port in enumerate(free_ports(3)):
                folder = self.workdir / f"sentinel-{index + 1}"
                folder.mkdir(exist_ok=True)
                self.sentinels.append(SentinelServer(folder, port, master.port, tls=self.tls,
                                                     password=self.sentinel_password,
                                                     node_password=self.node_password, down_after=self.down_after))
            for sentinel in self.sentinels:
                sentinel.known = [f"sentinel known-replica {SERVICE} 127.0.0.1 {self.nodes[1].port}"] + [
                    f"sentinel known-sentinel {SERVICE} 127.0.0.1 {peer.port} {peer.id}"
                    for peer in self.sentinels if peer is not sentinel]
                sentinel.start()
            self._await_formed()
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        for process in [*self.sentinels, *self.nodes]:
            process.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "SentinelTopology":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what a test does with it ---------------------------------------------------------------

    def master(self) -> RedisServer:
        """The data node the sentinels name as master now."""
        _, port = self.ask_sentinel("SENTINEL", "get-master-addr-by-name", SERVICE)
        return next(node for node in self.nodes if node.port == int(port))

    def kill_master(self) -> RedisServer:
        """SIGKILL the master (the fault itself); return it."""
        master = self.master()
        assert master.process is not None, "the master runs"
        master.process.send_signal(signal.SIGKILL)
        master.process.wait()
        master.process = None
        return master

    def await_failover(self, old: RedisServer, timeout: float = READY_TIMEOUT) -> RedisServer:
        """Wait until the sentinels name a master other than ``old`` and it says it is the master; return it."""
        deadline = time.monotonic() + timeout
        sentinel = self._sentinel_client(self.sentinels[0])
        events = sentinel.pubsub(ignore_subscribe_messages=True)
        events.subscribe("+switch-master")
        try:
            while self.master().port == old.port:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GridError(f"no failover within {timeout:g} s; sentinel log:\n"
                                    f"{self.sentinels[0].log_path.read_text(errors='replace')[-3000:]}")
                events.get_message(timeout=min(left, 1.0))
            new = self.master()
            while self.node_client(new).execute_command("ROLE")[0] != b"master":
                if time.monotonic() > deadline:
                    raise GridError(f"{new.url} was named master but is not one within {timeout:g} s")
                time.sleep(FORMING_POLL)
            return new
        finally:
            events.close()
            sentinel.close()

    def rejoin(self, node: RedisServer) -> None:
        """Start a killed node again, as a replica of the master now (a node run from a config file would have
        that written there by the sentinels; ours take arguments); return once it follows it."""
        node.replica_of = self.master().port
        node.restart()
        self._await_replica_synced(node)

    def ask_sentinel(self, *command: str) -> list:
        """A command to the first sentinel that answers."""
        problems = []
        for sentinel in self.sentinels:
            client = self._sentinel_client(sentinel)
            try:
                return [item.decode() if isinstance(item, bytes) else item
                        for item in client.execute_command(*command)]
            except redis.RedisError as exc:
                problems.append(f"{sentinel.port}: {exc}")
            finally:
                client.close()
        raise GridError(f"no sentinel answered {' '.join(command)}: {'; '.join(problems)}")

    def node_client(self, node: RedisServer) -> redis.Redis:
        """A plain client of one data node."""
        return redis.Redis(**BusAddress.from_url(node.url, **self._tls(), password=self.node_password).redis_kwargs())

    # -- plumbing -------------------------------------------------------------------------------

    def _node(self, name: str, replica_of: int | None) -> RedisServer:
        folder = self.workdir / name
        folder.mkdir(exist_ok=True)
        # A master waits 5 s for more replicas before a diskless sync by default: ours has one, and it is there.
        node = RedisServer(folder, ("--repl-diskless-sync-delay", "0", *self.node_args), tls=self.tls,
                           password=self.node_password, replica_of=replica_of)
        node.start()
        self.nodes.append(node)
        return node

    def _sentinel_client(self, sentinel: SentinelServer) -> redis.Redis:
        return redis.Redis(**BusAddress.from_url(sentinel.url, **self._tls(),
                                                 password=self.sentinel_password).redis_kwargs(),
                           socket_timeout=READY_TIMEOUT)

    def _tls(self) -> dict[str, str]:
        return self.tls.security() if self.tls else {}

    def _await_replica_synced(self, replica: RedisServer) -> None:
        """Until the master streams its writes to ``replica``. A replica's link is up once it has loaded the
        master's snapshot, but after a diskless sync the master holds the stream back until the replica's
        first acknowledgement, up to a second later: a master killed before then takes every write since with
        it. A write the replica has acknowledged (``WAIT``) proves the stream flows."""
        master = self.node_client(next(node for node in self.nodes if node.port == replica.replica_of))
        try:
            self._await(lambda: master.set(SYNC_PROBE, replica.port, px=round(READY_TIMEOUT * 1000)) and
                        master.wait(1, round(FORMING_POLL * 1000)) >= 1,
                        f"the replica on port {replica.port} to follow the master")
            master.delete(SYNC_PROBE)
        finally:
            master.close()

    def _await_formed(self) -> None:
        """Until each sentinel knows the replica and its two peers: only then can they fail the master over."""
        for sentinel in self.sentinels:
            client = self._sentinel_client(sentinel)
            try:
                self._await(partial(_knows_everyone, client),
                            f"the sentinel on port {sentinel.port} to find the replica and its peers")
            finally:
                client.close()

    @staticmethod
    def _await(condition: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not condition():
            if time.monotonic() > deadline:
                raise GridError(f"timed out waiting for {what} ({READY_TIMEOUT:g} s)")
            time.sleep(FORMING_POLL)


def _knows_everyone(sentinel: redis.Redis) -> bool:
    return len(sentinel.execute_command("SENTINEL", "REPLICAS", SERVICE)) >= 1 and \
        len(sentinel.execute_command("SENTINEL", "SENTINELS", SERVICE)) >= 2
