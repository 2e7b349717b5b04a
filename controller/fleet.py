"""A fleet of nodes as the operator describes it (an inventory), and the folder each node's files go to.

An inventory names each node: ``gid``, ``nid``, ``hostname`` and the ``roles`` it is granted. It is a TOML
file (``.toml``)::

    [[nodes]]
    gid = 1
    nid = 7
    hostname = "web-7.example.net"
    roles = ["web"]

or a CSV file (``.csv``) with a header row, roles separated by spaces or ``;``::

    gid,nid,hostname,roles
    1,7,web-7.example.net,web
    1,8,db-8.example.net,db;backup

``ac-controller acl add-agents`` and ``ac-controller certs client --inventory`` fill one folder per node,
named by its hostname, with what goes to ``/etc/ac/`` on that node (``NODE_FILES``).
"""

import csv
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The files of a node's folder, by what they are: copied as they are to ``/etc/ac/`` on the node.
CONFIG_FILE = "agent2.toml"
CA_FILE = "ca.pem"
CERT_FILE = "client.pem"
KEY_FILE = "client.key"
NODE_FILES = (CONFIG_FILE, CA_FILE, CERT_FILE, KEY_FILE)
#: Where a node keeps them, as its agent2.toml names them.
NODE_CONFIG_DIR = "/etc/ac"

#: What a node's agent2.toml holds besides its identity and its bus: files where the systemd unit lets the agent
#: write them (``configs/systemd/ac-agent.service``, docs/operations.md). ``--template`` replaces this.
NODE_DEFAULTS: dict[str, Any] = {
    "main": {"message_id_file": "/var/lib/ac-agent/message.id", "history_file": "/var/lib/ac-agent/history.db"},
    "logging": {
        "db": {"type": "DB", "log_dir": "/var/log/ac-agent"},
        "ac": {"type": "AC", "levels": "2,4,7-9"},
        "console": {"type": "console", "levels": "7-9"},
    },
}

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
ROLE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FIELDS = ("gid", "nid", "hostname", "roles")


class InventoryError(ValueError):
    """An inventory that cannot be used; the message names the file, the entry and the field."""


@dataclass(frozen=True, slots=True)
class Node:
    """One node of an inventory: the agent it runs (``gid:nid``), its hostname, the roles it is granted."""

    gid: int
    nid: int
    hostname: str
    roles: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.gid}:{self.nid}"


def check_hostname(hostname: str) -> str | None:
    """What is wrong with ``hostname`` as a node's name (also the name of its folder), if anything."""
    if len(hostname) > 253 or not HOSTNAME.fullmatch(hostname):
        return "is not a hostname (letters, digits, '-', '_', labels separated by '.')"
    return None


def check_roles(roles: list[str] | tuple[str, ...]) -> str | None:
    bad = [role for role in roles if not isinstance(role, str) or not ROLE.fullmatch(role)]
    return f"role {bad[0]!r}: use letters, digits, '_', '.' or '-'" if bad else None


def read_inventory(path: Path) -> list[Node]:
    """The nodes of an inventory (``.toml`` or ``.csv``), checked: every field, no gid:nid or hostname twice."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read: {exc.strerror}") from None
    if path.suffix == ".toml":
        entries = _toml_entries(path, text)
    elif path.suffix == ".csv":
        entries = _csv_entries(path, text)
    else:
        raise InventoryError(f"{path}: an inventory is a .toml or a .csv file")
    nodes: list[Node] = []
    seen: dict[object, str] = {}
    for where, entry in entries:
        node = _node(where, entry)
        for key, what in (((node.gid, node.nid), f"agent {node.name}"), (node.hostname.lower(), node.hostname)):
            if key in seen:
                raise InventoryError(f"{where}: {what} is already in {seen[key]}")
            seen[key] = where
        nodes.append(node)
    if not nodes:
        raise InventoryError(f"{path}: names no node")
    return nodes


def _toml_entries(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    if set(document) - {"nodes"} or not isinstance(document.get("nodes", []), list):
        raise InventoryError(f"{path}: expected [[nodes]] tables only, e.g. [[nodes]] gid = 1 nid = 7 "
                             'hostname = "web-7" roles = ["web"]')
    return [(f"{path} [[nodes]] #{index}", entry) for index, entry in enumerate(document.get("nodes", []), 1)]


def _csv_entries(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    rows = [(number, row) for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#") for row in csv.reader([line])]
    header = [name.strip() for name in rows[0][1]] if rows else []
    if sorted(header) != sorted(FIELDS):
        raise InventoryError(f"{path}: the header row must name the columns {','.join(FIELDS)} (found "
                             f"{','.join(header) or 'none'})")
    entries = []
    for number, row in rows[1:]:
        where = f"{path} line {number}"
        if len(row) != len(header):
            raise InventoryError(f"{where}: expected {len(FIELDS)} columns ({','.join(header)})")
        values: dict[str, Any] = {key: value.strip() for key, value in zip(header, row, strict=True)}
        for key in ("gid", "nid"):
            values[key] = int(values[key]) if values[key].isdigit() else values[key]
        values["roles"] = [role for role in re.split(r"[;,\s]+", values["roles"]) if role]
        entries.append((where, values))
    return entries


def _node(where: str, entry: object) -> Node:
    if not isinstance(entry, dict):
        raise InventoryError(f"{where}: expected a table of {', '.join(FIELDS)}")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise InventoryError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    missing = [key for key in ("gid", "nid", "hostname") if key not in entry]
    if missing:
        raise InventoryError(f"{where}: missing field {missing[0]!r}")
    for key in ("gid", "nid"):
        if not isinstance(entry[key], int) or isinstance(entry[key], bool) or entry[key] <= 0:
            raise InventoryError(f"{where}: {key} must be a positive integer, got {entry[key]!r}")
    hostname, roles = entry["hostname"], entry.get("roles", [])
    if not isinstance(hostname, str) or check_hostname(hostname):
        raise InventoryError(f"{where}: hostname {hostname!r} {check_hostname(str(hostname))}")
    if not isinstance(roles, list) or check_roles(roles):
        raise InventoryError(f"{where}: roles must be a list of names; "
                             f"{check_roles(roles) if isinstance(roles, list) else repr(roles)}")
    return Node(entry["gid"], entry["nid"], hostname, tuple(sorted(set(roles))))


def node_folder(out: Path, hostname: str) -> Path:
    """Where the files of node ``hostname`` go (made, readable by its owner only)."""
    problem = check_hostname(hostname)
    if problem:
        raise InventoryError(f"{hostname!r} {problem}")
    folder = out / hostname
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def node_config(node: Node, url: str, username: str, password: str,
                template: dict[str, Any] | None = None) -> dict[str, Any]:
    """The agent2.toml of ``node``: the ``template`` (default ``NODE_DEFAULTS``) with the node's identity, its
    granted roles and its bus (user, password; with ``rediss://``, the TLS files in ``/etc/ac`` unless the
    template names others) set over it."""
    base = _copy(NODE_DEFAULTS if template is None else template)
    main = {"gid": node.gid, "nid": node.nid, "roles": list(node.roles)}
    main |= {key: value for key, value in base.pop("main", {}).items() if key not in main}
    controllers = base.pop("controllers", {})
    bus = controllers.pop("main", {})
    security = bus.pop("security", {})
    security.update(username=username, password=password)
    if url.startswith("rediss://"):
        for key, name in (("certificate_authority", CA_FILE), ("client_certificate", CERT_FILE),
                          ("client_certificate_key", KEY_FILE)):
            security.setdefault(key, f"{NODE_CONFIG_DIR}/{name}")
    bus = {**bus, "url": url, "security": security}
    return {"main": main, "controllers": {"main": bus, **controllers}, **base}


def _copy(table: dict[str, Any]) -> dict[str, Any]:
    return {key: _copy(value) if isinstance(value, dict) else value for key, value in table.items()}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it may hold a password or a key), replacing it
    whole: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    with open(temporary, "x", opener=lambda name, flags: os.open(name, flags, 0o600)) as file:
        file.write(text)
    temporary.replace(path)
