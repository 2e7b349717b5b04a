"""``Client``: send commands to agents through the controller, read their results."""

import contextlib
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis
import redis.sentinel
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from acbus.address import BusAddress
from acclient.cmd import WAIT_SLICE, BaseCmd, Cmd, collect
from acclient.errors import JobError
from acclient.job import Job
from acclient.runargs import RunArgs
from acclient.sender import Sender
from protocol import keys
from protocol.command import CONTROLLER_CMD, Command, check_result_ttl, check_target
from protocol.errors import ProtocolError
from protocol.states import State
from protocol.targets import Rollout, check_hosts, check_ttl, parse_agents

log = logging.getLogger(__name__)

#: Seconds the shortcut methods (``get_os_info``, ``get_msgs``, ...) wait for their answer.
DEFAULT_TIMEOUT = 60.0

#: The run arguments of a command given none (a ``RunArgs`` never changes: ``update`` makes a new one).
NO_ARGS = RunArgs()

#: The command the ``execute_js_py`` extension runs jumpscripts with.
JUMPSCRIPT_COMMAND = "execute_js_py"

#: Seconds a connection to the bus may take to open.
CONNECT_TIMEOUT = 5.0
#: Seconds any one reply of the bus may take. Comfortably above the ``WAIT_SLICE`` (1 s) that each blocking
#: read asks the bus to wait at most, so a healthy bus always answers in time (redis-py's own default differs
#: between versions: none in 5.x, 5 s with 10 retries in 8.x). A wait's reply has a bound of its own (its
#: slice plus ``WAIT_SLACK``), so on a bus that stops answering a wait ends within a second of its deadline.
SOCKET_TIMEOUT = WAIT_SLICE + 4.0
#: Times a command is sent again on a new connection after the old one failed (a Redis restart); a bus that
#: does not answer in time is not asked again (the waits ask again themselves, up to their deadline).
CONNECT_RETRIES = 2

#: With Sentinel, times a command is sent again while the sentinels find a new master: a failover takes the
#: sentinels' down-after time plus a second or two; with waits of up to 0.5 s this rides out about 30 s.
FAILOVER_RETRIES = 60

#: Keywords of ``Client.from_url`` about the bus (``BusAddress``); every other keyword is a redis-py option.
SECURITY_OPTIONS = ("username", "password", "ca_file", "cert_file", "key_file", "sentinel_username",
                    "sentinel_password", "wait_replicas", "wait_timeout")


def connection_defaults(retries: int = CONNECT_RETRIES) -> dict[str, Any]:
    """The redis-py options every client gets unless it is given its own: the same, whatever redis-py's version
    (its defaults changed from 5.x to 8.x), so every wait ends at its deadline with our ``TimeoutError``."""
    return {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": SOCKET_TIMEOUT,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries,
                           supported_errors=(redis.ConnectionError,))}


def redis_for(address: BusAddress, **options: Any) -> redis.Redis:
    """A redis-py client of the bus at ``address``, ``options`` over ``connection_defaults()``. For a Sentinel
    address, one that asks the sentinels where the master is, and asks again after a failover: redis-py's
    ``Sentinel`` (a connection that meets ``READONLY`` or cannot reach the master gives way to a new one, and
    commands are sent again up to ``FAILOVER_RETRIES`` times)."""
    if not address.sentinels:
        return redis.Redis(**{**connection_defaults(), **address.redis_kwargs(), **options})
    defaults = connection_defaults(FAILOVER_RETRIES)
    timeouts = {key: value for key, value in {**defaults, **options}.items() if key.startswith("socket_")}
    # Each sentinel is asked briefly (redis-py's own default retries for seconds): the next one may know.
    sentinels = redis.sentinel.Sentinel(list(address.sentinels), sentinel_kwargs={
        **address.sentinel_kwargs(), **timeouts, "retry": connection_defaults()["retry"]})
    connection_class = _MasterSSLConnection if address.tls else _MasterConnection
    return sentinels.master_for(address.service, connection_class=connection_class,
                                **{**defaults, **address.redis_kwargs(), **options})


class _MasterConnection(redis.sentinel.SentinelManagedConnection):
    """A connection to the master the sentinels name, asked again each time it connects: redis-py 8 connects a
    broken connection again to the address it had (``send_packed_command``), which after a failover is the old
    master, until its retries run out."""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if retry_socket_connect:
            self.connect()  # asks the sentinels, then comes back here through connect_to(), without retrying
        else:
            super().connect_check_health(check_health=check_health, retry_socket_connect=False)


class _MasterSSLConnection(_MasterConnection, redis.SSLConnection):
    """``_MasterConnection`` over TLS."""


class Client:
    """A client of the agent controller, talking to its Redis bus.

    :param address: Redis host address
    :param port: Redis port
    :param password: (optional) Redis password
    :param db: Redis database number
    :param redis_options: more redis-py options (``username``, ``ssl``, ``ssl_ca_certs``, ...); those not given
        are ``connection_defaults()`` (connect within 5 s, each reply within 5 s, 2 retries on a new connection)
    """

    def __init__(self, address: str = "localhost", port: int = 6379, password: str | None = None, db: int = 0,
                 **redis_options: Any) -> None:
        self._start(redis_for(BusAddress(host=address, port=port, password=password, db=db), **redis_options))

    def _start(self, connection: redis.Redis, wait: tuple[str, int, int] | None = None) -> None:
        self._redis = connection
        self._sender = Sender(connection, wait)
        self._epochs_gone: dict[bytes | None, float] = {}  # bus epochs seen replaced, and since when

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "Client":
        """A client of the bus at ``url`` (``redis://``, ``rediss://``, ``unix://``, or the sentinels of a bus:
        ``redis+sentinel://h1:26379,h2:26379/<service>/<db>``, ``rediss+sentinel://``, which follows a
        failover).

        ``options``: ``username``, ``password``, ``ca_file``, ``cert_file``, ``key_file`` (of the data nodes),
        ``sentinel_username``, ``sentinel_password`` (of the sentinels), ``wait_replicas``, ``wait_timeout``
        (each command sent is confirmed by that many replicas, Redis ``WAIT``, so that a failover cannot lose
        it); any other is a redis-py option (``socket_connect_timeout``, ...), over ``connection_defaults()``.
        """
        address = BusAddress.from_url(url, **{key: options.pop(key) for key in SECURITY_OPTIONS if key in options})
        client = cls.__new__(cls)
        client._start(redis_for(address, **options), address.wait)
        return client

    # -- sending --------------------------------------------------------------------

    def cmd(self, gid: int | None, nid: int | None, cmd: str, args: RunArgs | None, data: Any = None,
            id: str | None = None, role: str | None = None, fanout: bool = False, *,
            roles: Sequence[str] | None = None, targets: Sequence[str | tuple[int, int]] | None = None,
            exclude: Sequence[str | tuple[int, int]] | None = None, hosts: str | None = None,
            rollout: Rollout | dict[str, Any] | None = None, ttl: float | None = None,
            tags: str | None = None, result_ttl: int | None = None) -> Cmd:
        """Send a command; return its ``Cmd``.

        :param gid: grid id (can be None)
        :param nid: node id (can be None)
        :param cmd: the command (``execute``, ``get_os_info``, an extension, ...)
        :param args: a ``RunArgs`` (or None)
        :param data: the command's input (``execute``: its stdin); anything but a string is JSON-encoded
        :param id: command id; a random uuid4 when None
        :param role: only agents holding this role may run it (``"*"``: any agent). With a role, give no
            nid; a gid limits it to that grid
        :param fanout: with a role (or ``hosts``), send it to every agent holding the role; one that is not
            alive answers at once with an ``ERROR``

        Beyond the 2015 client, keyword only (``docs/client.md``):

        :param roles: agents holding all of these roles (instead of ``role``)
        :param targets: exactly these agents, ``["1:1", "2:4"]`` or ``[(1, 1), (2, 4)]`` (instead of gid, nid,
            role)
        :param exclude: none of these agents
        :param hosts: agents whose hostname matches this shell-style pattern, e.g. ``"web-*"``
        :param rollout: start a fanout's targets in waves: ``{"batch": 5 or "20%", "wait": seconds,
            "max_errors": 1 or "5%"}``; targets never started end ``SKIPPED``
        :param ttl: seconds the command may wait to be routed (at most the controller's ``route_ttl``)
        :param tags: a string copied into every job of the command
        :param result_ttl: seconds its results are kept after their last update (at most the controller's
            ``result_ttl``, 24 h by default): less memory for commands whose results are read at once
        """
        return self._sent([self._prepare(gid, nid, cmd, args, data, id, role, fanout, roles=roles, targets=targets,
                                         exclude=exclude, hosts=hosts, rollout=rollout, ttl=ttl, tags=tags,
                                         result_ttl=result_ttl)])[0]

    def submit(self, commands: Iterable[Mapping[str, Any]]) -> list[Cmd]:
        """Send many commands in one round trip; return their ``Cmd`` objects, in order.

        Each command is a mapping of ``cmd``'s arguments by name: ``{"gid": 1, "nid": 1, "cmd": "ping"}``
        (``args`` and ``data`` may be left out). Every command is checked before any is sent, so a bad one
        raises and none goes. With ``iter_results`` across them, a program fanning its own commands out to
        a thousand agents costs what the controller's batching does."""
        return self._sent([self._prepare(**{"args": None, **command}) for command in commands])

    def iter_results(self, cmds: Sequence[Cmd], timeout: float = 0) -> Iterator[Job]:
        """Yield the results of all of ``cmds`` as they arrive, whichever command each is of, until every
        command has had its last result (as ``Cmd.iter_results`` decides for one) or ``timeout`` seconds
        passed (0: no limit). Afterwards each ``Cmd.report()`` says how its agents did."""
        yield from collect(self, cmds, timeout)

    def _prepare(self, gid: int | None, nid: int | None, cmd: str, args: RunArgs | None, data: Any = None,
                 id: str | None = None, role: str | None = None, fanout: bool = False, *,
                 roles: Sequence[str] | None = None, targets: Sequence[str | tuple[int, int]] | None = None,
                 exclude: Sequence[str | tuple[int, int]] | None = None, hosts: str | None = None,
                 rollout: Rollout | dict[str, Any] | None = None, ttl: float | None = None,
                 tags: str | None = None, result_ttl: int | None = None) -> Cmd:
        """A checked command, not sent yet (``_sent`` sends it)."""
        if args is None:
            args = NO_ARGS
        elif not isinstance(args, RunArgs):
            raise ValueError(f"args must be a RunArgs, got {type(args).__name__}")
        if role is not None and roles is not None:
            raise ProtocolError("roles", "give either role or roles, not both")
        chosen_roles = tuple(roles) if roles is not None else (role,) if role is not None else ()
        wire_data = "" if data is None else data if isinstance(data, str) else json.dumps(data)
        command = Command(
            id or str(uuid.uuid4()), cmd, gid or 0, nid or 0, chosen_roles, bool(fanout), args.wire, wire_data,
            tags, targets=_agents(targets, "targets"), exclude=_agents(exclude, "exclude"),
            hosts=None if hosts is None else check_hosts(hosts),
            rollout=rollout if isinstance(rollout, Rollout | None) else Rollout.from_wire(rollout),
            ttl=None if ttl is None else check_ttl(ttl),
            result_ttl=None if result_ttl is None else check_result_ttl(result_ttl))
        check_target(command)
        return Cmd(self, command.id, gid, nid, cmd, args, data, role, fanout, command=command)

    def _sent(self, cmds: list[Cmd]) -> list[Cmd]:
        """Send ``cmds`` (``_prepare``) in one round trip; what the bus said comes with each."""
        if cmds:
            epoch, controller_alive = self._sender.send([cmd.wire_body() for cmd in cmds])
            for cmd in cmds:
                cmd.sent(epoch, controller_alive)
        return cmds

    def execute(self, gid: int | None, nid: int | None, executable: str, cmdargs: list[str] | None = None,
                args: RunArgs | None = None, data: Any = None, id: str | None = None, role: str | None = None,
                fanout: bool = False, **selection: Any) -> Cmd:
        """Run ``executable`` with ``cmdargs`` on the agent: no shell, ``data`` to its stdin. ``selection``:
        the keyword-only arguments of ``cmd`` (``targets``, ``exclude``, ``hosts``, ``rollout``, ...)."""
        args = (args or RunArgs()).update({"name": executable, "args": list(cmdargs or [])})
        return self.cmd(gid, nid, "execute", args, data, id, role, fanout, **selection)

    def execute_jumpscript(self, gid: int | None, nid: int | None, domain: str, name: str, data: Any = None,
                           args: RunArgs | None = None, role: str | None = None, fanout: bool = False,
                           **selection: Any) -> Cmd:
        """Run the jumpscript ``<domain>/<name>.py`` on the agent (the ``execute_js_py`` extension must be
        configured there); ``data`` (any JSON value) is passed to it and its return value is the result."""
        args = (args or RunArgs()).update({"domain": domain, "name": name})
        return self.cmd(gid, nid, JUMPSCRIPT_COMMAND, args, json.dumps(data), role=role, fanout=fanout, **selection)

    # -- reading back -----------------------------------------------------------------

    def get_by_id(self, gid: int, nid: int, id: str) -> BaseCmd:
        """A handle on command ``id`` as it ran on agent ``gid:nid``, to read it later."""
        return BaseCmd(self, id, gid, nid)

    def get_cmd_jobs(self, id: str) -> dict[tuple[int, int], Job]:
        """Every available job result of command ``id``, keyed by ``(gid, nid)``."""
        results: dict[bytes, bytes] = self._redis.hgetall(keys.job_results(id))  # type: ignore[assignment]
        return {keys.parse_agent_name(field.decode()): Job(self, raw) for field, raw in results.items()}

    def get_cmds(self, start: int = 0, count: int = 100) -> list[dict[str, Any]]:
        """Command history, newest first: ``count`` commands from index ``start``."""
        return [json.loads(raw) for raw in self._redis.lrange(keys.JOBLOG, start, start + count - 1)]

    # -- asking agents ----------------------------------------------------------------

    def get_cpu_info(self, gid: int, nid: int, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """CPU info of the agent's node: one entry per logical CPU."""
        return self._ask(gid, nid, "get_cpu_info", timeout=timeout)

    def get_disk_info(self, gid: int, nid: int, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """Disk partitions of the agent's node, with their usage."""
        return self._ask(gid, nid, "get_disk_info", timeout=timeout)

    def get_mem_info(self, gid: int, nid: int, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Memory of the agent's node."""
        return self._ask(gid, nid, "get_mem_info", timeout=timeout)

    def get_nic_info(self, gid: int, nid: int, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """Network interfaces of the agent's node."""
        return self._ask(gid, nid, "get_nic_info", timeout=timeout)

    def get_os_info(self, gid: int, nid: int, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """OS of the agent's node: hostname, uptime, platform, virtualization, ..."""
        return self._ask(gid, nid, "get_os_info", timeout=timeout)

    def get_msgs(self, gid: int, nid: int, jobid: str | None = None, timefrom: int | None = None,
                 timeto: int | None = None, levels: Any = "*", limit: int = 20,
                 timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """Log messages stored in the agent's DB, newest first.

        :param jobid: only this job's
        :param timefrom: from this time (epoch seconds)
        :param timeto: up to this time (epoch seconds)
        :param levels: ``"*"``, ``"1,2,6-9"`` or a list of levels
        :param limit: at most this many (the agent returns 1000 at the most)
        """
        query = {"jobid": jobid, "timefrom": timefrom, "timeto": timeto, "levels": levels, "limit": limit}
        return self._ask(gid, nid, "get_msgs", {key: value for key, value in query.items() if value is not None},
                         timeout=timeout)

    def get_processes(self, gid: int, nid: int, domain: str | None = None, name: str | None = None,
                      timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """Stats of the jobs running on the agent now, optionally of one ``domain`` and/or ``name``."""
        query = {key: value for key, value in {"domain": domain, "name": name}.items() if value is not None}
        return self._ask(gid, nid, "get_processes_stats", query, timeout=timeout)

    def list_agents(self, timeout: float = DEFAULT_TIMEOUT, *, role: str | None = None,
                    alive: bool | None = None) -> list[dict[str, Any]]:
        """Every agent the controllers know: gid, nid, roles, alive, running jobs, host, version; only those
        holding ``role``, or only those alive (``alive=True``) or not (``False``), when given."""
        query = {key: value for key, value in {"role": role, "alive": alive}.items() if value is not None}
        return self._ask(None, None, CONTROLLER_CMD, query or None, timeout=timeout, name="list_agents")

    def stop_rollout(self, command_id: str, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Start no further wave of rollout ``command_id``: its targets not started yet are answered ``SKIPPED`` at
        once; return how many. The wave running goes on (``kill`` it on its agents). ``JobError`` when no such
        rollout is in progress."""
        answer = self._ask(None, None, CONTROLLER_CMD, {"id": command_id}, timeout=timeout, name="rollout_stop")
        return int(answer["skipped"])

    # -- tunnels ------------------------------------------------------------------------

    def tunnel_open(self, gid: int, nid: int, local: int, gateway: str, ip: str, remote: int,
                    timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Open a tunnel: the agent listens on port ``local`` (0: any free port, reported back) and carries
        each connection, over the controller, to agent ``gateway`` (``"<gid>.<nid>"``, or ``"controller"``),
        which connects it to ``ip:remote``."""
        return self._ask(gid, nid, "hubble_open_tunnel", _tunnel(local, gateway, ip, remote), timeout=timeout)

    def tunnel_close(self, gid: int, nid: int, local: int, gateway: str, ip: str, remote: int,
                     timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Close a tunnel opened by ``tunnel_open`` (``local`` is the port it reported). Closing a tunnel that
        is not open is not an error."""
        return self._ask(gid, nid, "hubble_close_tunnel", _tunnel(local, gateway, ip, remote), timeout=timeout)

    def tunnel_list(self, gid: int, nid: int, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """The tunnels open on the agent."""
        return self._ask(gid, nid, "hubble_list_tunnels", timeout=timeout)

    # -- plumbing ---------------------------------------------------------------------

    def _ask(self, gid: int | None, nid: int | None, cmd: str, query: Any = None,
             timeout: float = DEFAULT_TIMEOUT, **run_args: Any) -> Any:
        """Send a command that answers with a JSON result and return that result.

        Raises ``JobError`` when it did not succeed, ``TimeoutError`` when no answer came.
        """
        job = self.cmd(gid, nid, cmd, RunArgs(**run_args), query).get_next_result(timeout)
        if job.state != State.SUCCESS:
            raise JobError(job)
        return json.loads(job.data) if job.data else None

    @contextlib.contextmanager
    def _subscribe(self, *channels: str) -> Iterator[redis.client.PubSub]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(*channels)
        except redis.TimeoutError:
            pubsub.close()
            raise TimeoutError("the bus did not answer a subscription within its socket timeout") from None
        try:
            yield pubsub
        finally:
            pubsub.close()


def _agents(value: Sequence[str | tuple[int, int]] | None, field: str) -> tuple[tuple[int, int], ...]:
    """``["1:1"]`` or ``[(1, 1)]`` as the wire's ``(gid, nid)`` pairs."""
    if value is None:
        return ()
    if isinstance(value, str):
        raise ProtocolError(field, f"expected a list of agents like [\"1:1\", \"2:4\"], got the string {value!r}")
    return parse_agents([item if isinstance(item, str) else f"{item[0]}:{item[1]}" for item in value], field)


def _tunnel(local: int, gateway: str, ip: str, remote: int) -> dict[str, Any]:
    return {"local": local, "gateway": gateway, "ip": ip, "remote": remote}
