"""Strict config files: every problem names the file, the section and the key.

A schema is a dict of key -> ``Option``. ``take_section`` checks one TOML
table against it: unknown keys, missing required keys, wrong types and
impossible values all stop the daemon at start with one clear sentence.
"""

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acbus.address import BusAddress
from acdaemon.metrics import parse_listen


class ConfigError(Exception):
    """A config file that cannot be used, and exactly why."""


REQUIRED: Any = object()


@dataclass(frozen=True, slots=True)
class Option:
    """One key of a config section: its type, its default (none: required) and a check of its value."""

    kind: type | tuple[type, ...]
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None  # returns what is wrong, or None


def load_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def take_section(table: object, schema: dict[str, Option], where: str) -> dict[str, Any]:
    """The values of one section, defaults filled in. ``where`` is ``"<file> [<section>]"``."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(schema))})")
    values: dict[str, Any] = {}
    for key, option in schema.items():
        if key not in table:
            if option.default is REQUIRED:
                raise ConfigError(f"{where}: missing required key {key!r}")
            values[key] = option.default
            continue
        value = table[key]
        if not isinstance(value, option.kind) or (isinstance(value, bool) and option.kind in (int, float)):
            raise ConfigError(f"{where} {key}: expected {_kind_name(option.kind)}, got {value!r}")
        problem = option.check(value) if option.check else None
        if problem:
            raise ConfigError(f"{where} {key}: {problem}, got {value!r}")
        values[key] = value
    return values


def check_sections(document: dict[str, Any], known: set[str], path: str | Path | None) -> None:
    unknown = sorted(set(document) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown section [{unknown[0]}] (known sections: {', '.join(sorted(known))})")


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def list_of_strings(value: list) -> str | None:
    return None if all(isinstance(item, str) for item in value) else "must be a list of strings"


def bus_url(value: str) -> str | None:
    try:
        BusAddress.from_url(value)
    except ValueError as exc:
        return str(exc)
    return None


#: Keys of a ``security`` table, shared by the agent's ``[controllers.<key>.security]``
#: and the controller's ``[bus.security]``.
SECURITY_SCHEMA = {
    "client_certificate": Option(str, None),
    "client_certificate_key": Option(str, None),
    "certificate_authority": Option(str, None),
    "username": Option(str, None),
    "password": Option(str, None),
    "sentinel_username": Option(str, None),
    "sentinel_password": Option(str, None),
}

#: How the agent confirms the writes that matter, its results (``BusAddress.wait_replicas``): keys of its
#: ``[controllers.<key>]``.
WAIT_SCHEMA = {
    "wait_replicas": Option(int, 0, lambda value: None if value >= 0 else "must be 0 (do not wait) or more"),
    "wait_timeout": Option((int, float), 1.0, positive),
}


def listen_address(value: str) -> str | None:
    """``""`` (off) or ``host:port``."""
    if not value:
        return None
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


#: The ``[metrics]`` section of both daemons.
METRICS_SCHEMA = {"listen": Option(str, "", listen_address)}


def bus_address(url: str, security: dict[str, Any], wait: dict[str, Any] | None = None) -> BusAddress:
    """A ``BusAddress`` from a URL, a checked ``security`` table and the ``WAIT_SCHEMA`` keys."""
    return BusAddress.from_url(
        url,
        username=security["username"],
        password=security["password"],
        ca_file=security["certificate_authority"],
        cert_file=security["client_certificate"],
        key_file=security["client_certificate_key"],
        sentinel_username=security["sentinel_username"],
        sentinel_password=security["sentinel_password"],
        **(wait or {}),
    )


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(item, item.__name__) for item in kinds)
