"""``ac``'s main: parse, connect, run one command, and turn every failure into one ``ac: ...`` line and an exit
status (``acclient.cli.parser.Exit``)."""

import argparse
import contextlib
import io
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis
import redis.sentinel

from acbus.address import BusAddress
from acclient.cli.parser import DEFAULT_BUS, Exit, build_parser
from acclient.client import Client
from acclient.errors import CommandLost, JobError, NoControllerError
from protocol import keys
from protocol.errors import ProtocolError

#: The options that may also come from the environment: option -> variable.
FROM_ENVIRONMENT = {"bus": "AC_BUS", "username": "AC_USERNAME", "password": "AC_PASSWORD", "ca_file": "AC_CA_FILE",
                    "cert_file": "AC_CERT_FILE", "key_file": "AC_KEY_FILE", "sentinel_username": "AC_SENTINEL_USERNAME",
                    "sentinel_password": "AC_SENTINEL_PASSWORD"}
#: Commands that need a controller alive on the bus to do anything.
NEED_CONTROLLER = {"agents", "agents-forget", "exec", "info", "logs", "kill"}


class Failure(Exception):
    """What ends ``ac`` with one line on stderr and the exit status ``code``."""

    def __init__(self, message: str, code: Exit = Exit.FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Context:
    """What every command gets: its options, the bus's address, and a client (made on first use)."""

    options: argparse.Namespace
    address: BusAddress
    _client: Client | None = field(default=None, repr=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect(self.options, self.address)
        return self._client

    @property
    def where(self) -> str:
        return self.address.url

    def require_controller(self) -> None:
        """Fail at once, sending nothing, when no controller is alive to route what we would send."""
        if not self.client._redis.exists(keys.CONTROLLER_ALIVE):
            raise Failure(f"no controller is alive on {self.where}: nothing was sent; start one (ac-controller -c "
                          "controller.toml, or systemctl start ac-controller), or check --bus / $AC_BUS",
                          Exit.NO_CONTROLLER)

    def hint(self) -> str:
        """``ac`` and the options a suggested command needs to reach the same bus (never the password)."""
        words = ["ac"]
        for option in ("bus", "username", "ca_file", "cert_file", "key_file", "sentinel_username"):
            value = getattr(self.options, f"given_{option}", None)
            if value:
                words += [f"--{option.replace('_', '-')}", value]
        from acclient.cli.render import shell_words

        return shell_words(words)


def main(argv: list[str] | None = None) -> None:
    """The ``ac`` console script."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C is KeyboardInterrupt even if inherited ignored
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)  # a pipe sees each line as it is printed
    options = build_parser().parse_args(argv)
    logging.getLogger("acclient").addHandler(logging.StreamHandler() if options.debug else logging.NullHandler())
    logging.getLogger("acclient").propagate = False
    sys.exit(run(options))


def run(options: argparse.Namespace) -> int:
    """Run the parsed command line; return the exit status (having said what went wrong)."""
    from acclient.cli.commands import COMMANDS

    try:
        context = Context(options, _address(options))
        command: Callable[[Context], int] = COMMANDS[options.command]
        if options.command in NEED_CONTROLLER:
            context.require_controller()
        return int(command(context))
    except BrokenPipeError:
        _quiet_pipe()
        return Exit.PIPE_CLOSED
    except KeyboardInterrupt:
        _say("ac: interrupted")
        return Exit.INTERRUPTED
    except Exception as exc:
        failure = explain(exc, options)
        if options.debug or failure is None:
            traceback.print_exc()
        if failure is None:
            _say(f"ac: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
            return Exit.FAILED
        _say(f"ac: {failure}")
        return failure.code


def _address(options: argparse.Namespace) -> BusAddress:
    for option, variable in FROM_ENVIRONMENT.items():
        given = getattr(options, option)
        setattr(options, f"given_{option}", given)  # for the commands ac suggests: what the line said
        if given is None:
            setattr(options, option, os.environ.get(variable) or None)
    for option in ("ca_file", "cert_file", "key_file"):
        path = getattr(options, option)
        if path and not os.access(path, os.R_OK):
            why = "no such file" if not os.path.exists(path) else "not readable"
            raise Failure(f"--{option.replace('_', '-')} {path}: {why} (${FROM_ENVIRONMENT[option]} sets it too)",
                          Exit.USAGE)
    try:
        address = BusAddress.from_url(options.bus or DEFAULT_BUS, username=options.username,
                                      password=options.password, ca_file=options.ca_file, cert_file=options.cert_file,
                                      key_file=options.key_file, sentinel_username=options.sentinel_username,
                                      sentinel_password=options.sentinel_password)
    except ValueError as exc:
        raise Failure(f"{exc} (from {'--bus' if options.given_bus else '$AC_BUS'})", Exit.USAGE) from None
    options.where = address.url
    return address


def connect(options: argparse.Namespace, address: BusAddress) -> Client:
    """A client of the bus, checked to answer (and to take our credentials) within ``--connect-timeout``."""
    client = Client.from_url(options.bus or DEFAULT_BUS, username=address.username, password=address.password,
                             ca_file=address.ca_file, cert_file=address.cert_file, key_file=address.key_file,
                             sentinel_username=address.sentinel_username,
                             sentinel_password=address.sentinel_password,
                             socket_connect_timeout=options.connect_timeout)
    if address.sentinels:  # each sentinel asked once: an error at once, not after riding out a failover
        client._redis.connection_pool.get_master_address()  # type: ignore[attr-defined]  # a SentinelConnectionPool
    client._redis.ping()
    return client


def explain(exc: BaseException, options: argparse.Namespace) -> Failure | None:
    """The one line (and exit status) that says what went wrong and what to do; None for a bug of ours."""
    if isinstance(exc, Failure):
        return exc
    where = getattr(options, "where", None) or options.bus or DEFAULT_BUS
    text = str(exc)
    if isinstance(exc, NoControllerError):
        return Failure(f"no controller is alive on {where}: command {exc.command_id} waits in cmds_queue, unrouted, "
                       "until one starts (and expires after its ttl or the controllers' route_ttl); start "
                       "ac-controller (systemctl start ac-controller)", Exit.NO_CONTROLLER)
    if isinstance(exc, CommandLost):
        return Failure(f"{text}; look with ac job {exc.command_id}, send it again if that is safe", Exit.LOST)
    if isinstance(exc, JobError):
        return Failure(text, Exit.FAILED)
    if isinstance(exc, redis.AuthenticationError):
        user = f"user {options.username!r}" if options.username else "the default user"
        return Failure(f"the bus at {where} refused the credentials of {user}: {text.rstrip('.')}; check --username "
                       "and --password ($AC_USERNAME, $AC_PASSWORD)", Exit.UNREACHABLE)
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return Failure(f"the bus at {where} refused: {text}; this user may not do that: use a client user "
                       "(ac-controller acl add-client NAME) or an admin user", Exit.UNREACHABLE)
    if isinstance(exc, redis.ResponseError) and text.startswith(("NOAUTH", "WRONGPASS")):
        return Failure(f"the bus at {where} wants credentials: give --username/--password ($AC_USERNAME, "
                       "$AC_PASSWORD)", Exit.UNREACHABLE)
    if isinstance(exc, redis.TimeoutError):
        return Failure(f"the bus at {where} did not answer in time ({text}): is it overloaded or stopped? "
                       f"(--connect-timeout {options.connect_timeout:g} s to reach it)", Exit.UNREACHABLE)
    if isinstance(exc, redis.sentinel.MasterNotFoundError):
        return Failure(f"no sentinel of {where} named a master: {text}; check the sentinels and the service in "
                       "--bus ($AC_BUS), and --sentinel-username/--sentinel-password ($AC_SENTINEL_USERNAME, "
                       "$AC_SENTINEL_PASSWORD)", Exit.UNREACHABLE)
    if isinstance(exc, redis.ConnectionError):
        return Failure(_connection_problem(text, where, options), Exit.UNREACHABLE)
    if isinstance(exc, ProtocolError | ValueError):
        return Failure(text, Exit.USAGE)
    if isinstance(exc, TimeoutError):
        return Failure(text, Exit.NO_REPLY)
    return None


def _connection_problem(text: str, where: str, options: argparse.Namespace) -> str:
    reason = text.split(". ", 1)[1].rstrip(".") if text.startswith("Error ") and ". " in text else text
    tls = where.startswith(("rediss://", "rediss+sentinel://"))
    if "SSL" in text or "certificate" in text.lower() or (tls and "EOF" in text):
        if "CERTIFICATE_VERIFY_FAILED" in text:
            advice = "the bus's certificate is not signed by the CA given (--ca-file, $AC_CA_FILE)"
        elif "EOF" in text or "alert" in text.lower():
            advice = "the bus may want a client certificate it trusts (--cert-file and --key-file)"
        else:
            advice = "check --ca-file, --cert-file and --key-file"
        return f"TLS with the bus at {where} failed: {reason}: {advice}"
    if "refused" in text.lower():
        return (f"cannot reach the bus at {where}: connection refused: is Redis running there? (the bus is --bus "
                "URL or $AC_BUS)")
    if not tls and ("reset by peer" in text or "closed by server" in text):
        return (f"the bus at {where} closed the connection ({reason}): if it speaks TLS, use rediss:// with "
                "--ca-file (and --cert-file/--key-file)")
    return f"cannot reach the bus at {where}: {reason}"


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr)


def _quiet_pipe() -> None:
    """The reader of our stdout went away: point stdout at /dev/null so nothing more is said at exit."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, cast(io.TextIOWrapper, sys.stdout).fileno())
