"""Starting and stopping a whole grid of real processes.

Everything lives in one temporary directory (configs, logs, agent data,
the redis-server's files) that is removed on stop; only a swarm's files go to
memory where the machine has room (``SWARM_FOLDER``). Readiness is awaited,
never guessed: redis-server reports it on a notify socket (its systemd
support), and the controller announces each agent's registration on the
events channel.
"""

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import tomli_w

import acclient
from acbus.address import BusAddress
from acclient.client import redis_for
from acgrid.processes import READY_TIMEOUT, GridError, spawn, stop_process
from acgrid.redis_server import RedisServer
from acgrid.sentinel import SentinelTopology
from acgrid.tls import TlsFiles, make_tls_files
from controller import acl as controller_acl
from protocol import keys
from protocol.acl import agent_user
from protocol.events import decode_event

#: Where a swarm keeps its files when the machine has room there: in memory. Each of its identities opens a
#: message DB and a history of its own (a few ``fdatasync`` calls each, 7 ms on this machine's disk against
#: 1 ms in memory): most of the time a 5 000-agent grid took to start, for files a swarm is not there to test.
SWARM_FOLDER = Path("/dev/shm")
#: Bytes one swarm identity's files take (130 KiB measured), with room to spare.
SWARM_BYTES_PER_AGENT = 256 * 1024
#: Bytes left free in ``SWARM_FOLDER`` beside a swarm's files.
SWARM_FOLDER_SPARE = 512 * 1024 * 1024


@dataclass
class AgentSpec:
    """One agent (or swarm of agent identities) of a grid, and what its agent2.toml adds to the generated one."""

    gid: int
    nid: int
    roles: tuple[str, ...] = ()
    #: Extra agent2.toml content, merged over the generated config (e.g. extensions).
    config: dict[str, Any] = field(default_factory=dict)
    #: Identities the one process hosts (``ac-agent --swarm``): nodes ``nid`` .. ``nid + swarm - 1``.
    swarm: int = 1

    @property
    def name(self) -> str:
        """The agent's name, which is also the name of its process (a swarm's first member)."""
        return keys.agent_name(self.gid, self.nid)

    @property
    def members(self) -> list[str]:
        return [keys.agent_name(self.gid, self.nid + index) for index in range(self.swarm)]


class Grid:
    """A private bus, ``controllers`` controllers and the given agents.

    With ``sentinel`` the bus is a ``SentinelTopology`` (a master, a replica, three sentinels; ``topology``),
    and every part is given its Sentinel address; ``sentinel_auth`` makes the data nodes and the sentinels
    require passwords, ``sentinel_options`` go to the topology (``down_after``, ``node_args``).
    Use as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(self, agents: list[AgentSpec] | None = None, *, controllers: int = 1, bus_url: str | None = None,
                 heartbeat_interval: float = 0.5, controller_config: dict[str, Any] | None = None,
                 log_level: str = "INFO", keep_files: bool = False, tls: bool = False, acl: bool = False,
                 sentinel: bool = False, sentinel_auth: bool = False,
                 sentinel_options: dict[str, Any] | None = None) -> None:
        self.agent_specs = {spec.name: spec for spec in (agents or [AgentSpec(1, 1)])}
        self.controller_count = controllers
        self.external_bus = bus_url
        self.heartbeat_interval = heartbeat_interval
        self.controller_config = controller_config or {}
        self.log_level = log_level
        self.keep_files = keep_files
        self.tls = tls
        self.tls_files: TlsFiles | None = None
        self.acl = acl
        self.sentinel = sentinel
        self.sentinel_auth = sentinel_auth
        self.sentinel_options = sentinel_options or {}
        self.topology: SentinelTopology | None = None
        self.credentials: dict[str, str] = {}  # the admin user, with acl: every part but agents and clients use it
        self._client_password: str | None = None
        self.workdir: Path | None = None
        self.swarm_workdir: Path | None = None  # in SWARM_FOLDER: where the swarms that fit there keep their files
        self._swarm_dirs: dict[str, Path] = {}  # swarm name -> its folder, decided once
        self._swarm_bytes = 0  # what the swarms placed in SWARM_FOLDER will take there
        self.bus_url = bus_url or ""
        self.redis_server: RedisServer | None = None
        self.controllers: list[subprocess.Popen | None] = []
        self.agents: dict[str, subprocess.Popen] = {}
        self._redis: redis.Redis | None = None
        self._log_names: dict[int, str] = {}  # pid -> name of its log

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> "Grid":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="ac-grid-"))
        try:
            if self.tls:
                self.tls_files = make_tls_files(self.workdir / "tls")
            if self.sentinel and not self.external_bus:
                self._start_topology()
            elif not self.external_bus:
                self.redis_server = RedisServer(self.workdir / "redis", tls=self.tls_files)
                self.redis_server.workdir.mkdir()
                self.bus_url = self.redis_server.start()
                if self.acl:
                    self._lock_down()
            for index in range(self.controller_count):
                self.start_controller(index)
            self.start_agents(list(self.agent_specs.values()))
        except redis.ConnectionError as exc:  # (the private redis-server was up: a --bus that is not)
            self.stop()
            raise GridError(f"cannot reach the bus at {self.bus_url}: {exc}") from None
        except BaseException:
            self.stop()
            raise

    def stop(self, keep_logs_in: Path | None = None) -> None:
        """Stop every process (agents first) and remove the grid's files; ``keep_logs_in``: copy every log there
        first (each process's, redis-server's), once the processes are stopped and the logs complete."""
        for name in list(self.agents):
            self.stop_agent(name)
        for index in range(len(self.controllers)):
            self.stop_controller(index)
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        if self.redis_server is not None:
            self.redis_server.stop()
            self.redis_server = None
        if self.topology is not None:
            self.topology.stop()
            self.topology = None
        if self.workdir is not None and keep_logs_in is not None:
            self._copy_logs(keep_logs_in)
        if self.workdir is not None and not self.keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.swarm_workdir is not None and not self.keep_files:
            shutil.rmtree(self.swarm_workdir, ignore_errors=True)

    def _copy_logs(self, destination: Path) -> None:
        assert self.workdir is not None  # start() makes it first
        for log_file in self.workdir.rglob("*.log"):
            copy = destination / log_file.relative_to(self.workdir)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log_file, copy)

    # -- access ---------------------------------------------------------------------

    def _start_topology(self) -> None:
        if self.acl:
            raise GridError("acl with sentinel: Redis keeps ACL users per node (they are not replicated), so each "
                            "node would need the same aclfile; run a Sentinel grid without acl")
        assert self.workdir is not None  # start() makes it first
        self.topology = SentinelTopology(self.workdir / "redis", tls=self.tls_files, auth=self.sentinel_auth,
                                         **self.sentinel_options)
        self.bus_url = self.topology.start()
        if self.topology.node_password:
            self.credentials = {"password": self.topology.node_password}

    @property
    def address(self) -> BusAddress:
        """The bus, with the grid's admin credentials (those of the controllers)."""
        return BusAddress.from_url(self.bus_url, **self._tls(), **self.credentials, **self._sentinel_secret())

    def _sentinel_secret(self) -> dict[str, str]:
        password = self.topology.sentinel_password if self.topology else None
        return {"sentinel_password": password} if password else {}

    def security_table(self, username: str | None = None, password: str | None = None) -> dict[str, str | None]:
        """The ``security`` table of a daemon's config: TLS files and the given (or the admin) user."""
        table: dict[str, str | None] = {}
        if self.tls_files is not None:
            table = {"certificate_authority": str(self.tls_files.ca),
                     "client_certificate": str(self.tls_files.client_cert),
                     "client_certificate_key": str(self.tls_files.client_key)}
        user: Mapping[str, str | None] = {"username": username, "password": password} if username else self.credentials
        return {**table, **user, **self._sentinel_secret()}

    def _tls(self) -> dict[str, str]:
        return self.tls_files.security() if self.tls_files else {}

    def _lock_down(self) -> None:
        """Least privilege: an admin user for the grid and the controllers, the default user off."""
        password = secrets.token_hex(16)
        plain = redis.Redis(**BusAddress.from_url(self.bus_url, **self._tls()).redis_kwargs())
        plain.execute_command("ACL", "SETUSER", "controller", "on", f">{password}", "~*", "&*", "+@all")
        plain.execute_command("ACL", "SETUSER", "default", "off")
        plain.close()
        self.credentials = {"username": "controller", "password": password}

    @property
    def redis(self) -> redis.Redis:
        """A plain redis-py client of the grid's bus."""
        if self._redis is None:
            self._redis = redis_for(self.address, socket_timeout=None) if self.topology else \
                redis.Redis(**self.address.redis_kwargs())
        return self._redis

    def client(self, **options: Any) -> acclient.Client:
        """A client of the grid's bus (``options`` for ``Client.from_url``); with acl, as client user
        ``client-grid``."""
        if not self.acl:
            return acclient.Client.from_url(self.bus_url, **self._tls(), **self.credentials, **self._sentinel_secret(),
                                            **options)
        user, password = self.client_user()
        return acclient.Client.from_url(self.bus_url, **self._tls(), username=user, password=password, **options)

    def client_user(self) -> tuple[str, str]:
        """With acl: the client user's name and password (created on first use)."""
        if self._client_password is None:
            self._client_password = controller_acl.add_client(self.redis, "grid")[1]
        return "client-grid", self._client_password

    def log_path(self, name: str) -> Path:
        assert self.workdir is not None  # start() makes it first
        return self.workdir / "logs" / f"{name}.log"

    def agent_dir(self, name: str) -> Path:
        assert self.workdir is not None  # start() makes it first
        spec = self.agent_specs.get(name)
        if spec is not None and spec.swarm > 1:
            return self._swarm_dir(spec)
        return self.workdir / "agents" / name.replace(":", "-")

    def _swarm_dir(self, spec: AgentSpec) -> Path:
        """A swarm's folder: in ``SWARM_FOLDER`` if that has room for its files, else with the others."""
        if spec.name not in self._swarm_dirs:
            assert self.workdir is not None  # start() makes it first
            base = self.workdir
            needed = spec.swarm * SWARM_BYTES_PER_AGENT
            if SWARM_FOLDER.is_dir() and os.access(SWARM_FOLDER, os.W_OK) and shutil.disk_usage(SWARM_FOLDER).free \
                    >= self._swarm_bytes + needed + SWARM_FOLDER_SPARE:  # (counting those placed, written or not)
                if self.swarm_workdir is None:
                    self.swarm_workdir = Path(tempfile.mkdtemp(prefix="ac-grid-swarms-", dir=SWARM_FOLDER))
                base = self.swarm_workdir
                self._swarm_bytes += needed
            self._swarm_dirs[spec.name] = base / "agents" / spec.name.replace(":", "-")
        return self._swarm_dirs[spec.name]

    # -- controllers ------------------------------------------------------------------

    def start_controller(self, index: int | None = None) -> int:
        """Start controller ``index`` (a new one if None) and wait until it runs."""
        if index is None:
            index = len(self.controllers)
        while len(self.controllers) <= index:
            self.controllers.append(None)
        assert self.workdir is not None  # start() makes it first
        config_path = self.workdir / f"controller-{index}.toml"
        security = self.security_table()
        bus = {"url": self.bus_url, **({"security": security} if security else {})}
        config = _merge({"bus": bus}, self.controller_config)
        config_path.write_text(tomli_w.dumps(config))
        with self._events() as events:
            process = self._spawn(f"controller-{index}", [sys.executable, "-m", "controller", "-c", str(config_path),
                                                          "--log-level", self.log_level])
            self.controllers[index] = process
            self._await_event(events, "controller_started", lambda event: True, process, f"controller-{index}")
        return index

    def stop_controller(self, index: int, kill: bool = False) -> None:
        process = self.controllers[index]
        if process is not None:
            stop_process(process, signal.SIGKILL if kill else signal.SIGTERM)
            self.controllers[index] = None

    # -- agents ---------------------------------------------------------------------------

    def start_agents(self, specs: list[AgentSpec]) -> None:
        """Start agents and wait until a controller has registered each of them."""
        with self._events() as events:
            started, waiting = {}, set()
            for spec in specs:
                self.agent_specs[spec.name] = spec
                started[spec.name] = self.agents[spec.name] = self._spawn_agent(spec)
                waiting.update(spec.members)
            while waiting:
                event = self._await_event(events, "agent_registered", lambda event: event["agent"] in waiting,
                                          started, f"{len(waiting)} agents (" + ", ".join(sorted(waiting)[:10]) + ")")
                waiting.discard(event["agent"])

    def start_agent(self, name: str) -> None:
        """(Re)start a known agent, keeping its data directory."""
        self.start_agents([self.agent_specs[name]])

    def start_agent_from_config(self, path: Path, name: str) -> None:
        """Start an agent from an agent2.toml of your own (pointing at this grid's bus) and wait until it
        is registered as ``name`` (``"<gid>:<nid>"``)."""
        with self._events() as events:
            process = self._spawn(f"agent-{name.replace(':', '-')}", [sys.executable, "-m", "agent", "-c", str(path),
                                                                    "--log-level", self.log_level])
            self.agents[name] = process
            self._await_event(events, "agent_registered", lambda event: event["agent"] == name, process,
                              f"agent {name}")

    def stop_agent(self, name: str, kill: bool = False) -> None:
        process = self.agents.pop(name, None)
        if process is not None:
            stop_process(process, signal.SIGKILL if kill else signal.SIGTERM)

    def write_agent_config(self, spec: AgentSpec) -> Path:
        folder = self.agent_dir(spec.name)
        folder.mkdir(parents=True, exist_ok=True)
        scripts = folder / "scripts"
        scripts.mkdir(exist_ok=True)
        config: dict[str, Any] = {
            "main": {"gid": spec.gid, "nid": spec.nid, "roles": list(spec.roles),
                     "heartbeat_interval": self.heartbeat_interval},
            "controllers": {"main": {"url": self.bus_url}},
            "extensions": jumpscript_extensions(scripts),
        }
        if self.acl and spec.swarm > 1:
            raise GridError(f"agent {spec.name}: a swarm shares its bus connections between identities, so it "
                            "cannot run with acl (a Redis user per agent)")
        if self.acl:
            password = controller_acl.add_agent(self.redis, spec.gid, spec.nid, roles=spec.roles)
            config["controllers"]["main"]["security"] = self.security_table(agent_user(spec.gid, spec.nid), password)
        elif self.security_table():
            config["controllers"]["main"]["security"] = self.security_table()
        path = folder / "agent2.toml"
        path.write_text(tomli_w.dumps(_merge(config, spec.config)))
        return path

    def _spawn_agent(self, spec: AgentSpec) -> subprocess.Popen:
        path = self.write_agent_config(spec)
        swarm = ["--swarm", str(spec.swarm)] if spec.swarm > 1 else []
        return self._spawn(f"agent-{spec.gid}-{spec.nid}", [sys.executable, "-m", "agent", "-c", str(path),
                                                            "--log-level", self.log_level, *swarm])

    # -- plumbing ---------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        process = spawn(argv, self.log_path(name))
        self._log_names[process.pid] = name
        return process

    @contextlib.contextmanager
    def _events(self):
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(keys.EVENTS)
        try:
            yield pubsub
        finally:
            pubsub.close()

    def _await_event(self, events: Any, kind: str, wanted: Any, processes: Any, what: str) -> dict[str, Any]:
        """Wait for a matching event; fail early if a process we wait for dies."""
        watched = processes.values() if isinstance(processes, dict) else [processes]
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            message = events.get_message(timeout=0.25)
            if message is not None:
                event = decode_event(message["data"])
                if event["event"] == kind and wanted(event):
                    return event
                continue
            for process in watched:
                if process.poll() is not None:
                    name = self._log_names[process.pid]
                    raise GridError(f"{name} exited with code {process.returncode} while starting; "
                                    f"its log:\n{self._tail(name)}")
        raise GridError(f"{what} not ready within {READY_TIMEOUT:g} s")

    def _tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def jumpscript_extensions(scripts: Path) -> dict[str, Any]:
    """The jumpscript runner under both of its command names: ``jumpscript`` (what the 2015 client's
    ``execute_jumpscript`` sends) and ``execute_js_py`` (the usage page's name, what ours sends)."""
    runner = {"binary": sys.executable, "cwd": str(scripts), "args": ["-m", "extensions.jumpscript", "{domain}",
                                                                      "{name}"]}
    return {"jumpscript": runner, "execute_js_py": dict(runner)}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged
