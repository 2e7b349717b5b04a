"""``ac-controller``: the command line of the controller daemon, and of the operator's fleet tools.

    ac-controller [-c controller.toml] [--bus URL]        run the controller
    ac-controller [-c ...] acl add-agent G N [--roles R,..] create agent G:N's Redis user, granted roles R; print
                                                          its credentials
    ac-controller [-c ...] acl add-agents INVENTORY --out DIR   the same for every node of an inventory; one
                                                          ready agent2.toml per node in DIR/<hostname>/
    ac-controller [-c ...] acl add-client NAME            a client user: send commands, read results only
    ac-controller [-c ...] acl list [--all] [--json]      every user made: agents and clients, roles, created,
                                                          last seen
    ac-controller [-c ...] acl revoke G N                 delete it (its connections are closed at once)
    ac-controller [-c ...] acl revoke-client NAME         delete a client user
    ac-controller certs ca|server|client|list DIR ...     a CA, the bus's certificate, client certificates
    ac-controller files list|show NAME|install DEST [NAME...]   the units, example configs, alert rules and
                                                          dashboard the wheel carries

The acl commands that change users save them in the bus's aclfile (ACL SAVE), and refuse when the bus has none
(``--in-memory`` changes a throwaway bus anyway).
"""

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import redis
import tomli_w

from acdaemon.config import ConfigError, load_toml
from acdaemon.logs import LEVELS, setup_logging
from acdaemon.run import refuse, run_daemon
from controller import acl, fleet
from controller import files as shipped
from controller.config import ControllerConfig, load_config
from controller.service import run_controller
from protocol.acl import agent_user

log = logging.getLogger("controller")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ac-controller", description="Route commands from clients to agents.")
    parser.add_argument("-c", "--config", help="controller.toml (default: built-in defaults)")
    parser.add_argument("--bus", help="bus URL, e.g. redis://127.0.0.1:6379/0 (overrides [bus] url)")
    parser.add_argument("--log-level", default="INFO", choices=LEVELS)
    parser.add_argument("--check", action="store_true", help="check the config and exit (status 0 if usable)")
    commands = parser.add_subparsers(dest="command", metavar="{acl,certs,files}",
                                     help="manage Redis users; make certificates; the files the wheel carries")
    _acl_parser(commands)
    _certs_parser(commands)
    _files_parser(commands)
    options = parser.parse_args(argv)
    setup_logging(options.log_level)
    if options.command == "certs":
        sys.exit(_certs(options))
    if options.command == "files":
        sys.exit(_files(options))
    try:
        config = load_config(options.config, options.bus)
    except (ConfigError, ValueError) as exc:
        refuse("ac-controller", exc)
    if options.command == "acl":
        sys.exit(_acl(options, config))
    if options.check:
        print(f"{options.config or 'defaults'}: ok (bus {config.bus.url}, metrics "
              f"{config.metrics_listen or 'off'})")
        for warning in bus_warnings(config):
            print(f"warning: {warning}")
        return
    try:
        run_daemon("ac-controller", run_controller, config, partial(load_config, options.config, options.bus))
    except KeyboardInterrupt:
        log.info("interrupted; stopped")


def bus_warnings(config: ControllerConfig) -> list[str]:
    """What is risky about the bus's own settings: no persistence, eviction (``--check`` prints them)."""
    client = redis.Redis(**config.bus.redis_kwargs(), socket_timeout=5, socket_connect_timeout=5)
    try:
        settings = client.config_get("appendonly") | client.config_get("maxmemory-policy") | client.config_get("save")
    except redis.RedisError as exc:
        return [f"could not read the bus's settings at {config.bus.url} ({exc}): check by hand that it has "
                "appendonly yes and maxmemory-policy noeviction (docs/operations.md)"]
    finally:
        client.close()
    warnings = []
    if settings.get("appendonly") != "yes":
        saving = f"only RDB snapshots ({settings['save']})" if settings.get("save") else "no persistence at all"
        warnings.append(f"the bus at {config.bus.url} has {saving}: if Redis restarts, commands waiting and "
                        "results not yet read are lost (agents adopt the jobs they still run). Set appendonly "
                        "yes to lose nothing")
    if settings.get("maxmemory-policy", "noeviction") != "noeviction":
        warnings.append(f"the bus at {config.bus.url} evicts keys when full (maxmemory-policy "
                        f"{settings['maxmemory-policy']}): it may drop commands or results. Set "
                        "maxmemory-policy noeviction (then a full bus refuses writes, which every part waits out)")
    return warnings


def _acl_parser(commands: argparse._SubParsersAction) -> None:
    acl_parser = commands.add_parser("acl", help="one Redis ACL user per agent (limited to its own keys), and per "
                                     "client; changes are saved in the bus's aclfile")
    acl_commands = acl_parser.add_subparsers(dest="acl", required=True)
    keep = argparse.ArgumentParser(add_help=False)
    keep.add_argument("--in-memory", action="store_true", help="change the users of a bus that has no aclfile (a "
                      "throwaway one): the change is lost when Redis restarts")
    add = acl_commands.add_parser("add-agent", parents=[keep], help="create (or reset) agent G:N's user; print its "
                                  "credentials")
    add.add_argument("gid", type=int)
    add.add_argument("nid", type=int)
    add.add_argument("--password", help="use this password instead of a random one")
    add.add_argument("--roles", default="", help="the roles the agent may register with, comma-separated (default "
                     "none: it is reached by gid and nid only); a registration claiming others is refused")
    add.add_argument("--agent-url", help="the bus URL as the agent reaches it (default: the controller's)")
    bulk = acl_commands.add_parser("add-agents", parents=[keep], help="create the user of every node of an "
                                   "inventory and write each node's agent2.toml into OUT/<hostname>/")
    bulk.add_argument("inventory", type=Path, help="a .toml ([[nodes]] gid, nid, hostname, roles) or .csv (header "
                      "gid,nid,hostname,roles; roles separated by spaces or ';') file")
    bulk.add_argument("--out", type=Path, required=True, help="the folder of the nodes' folders")
    bulk.add_argument("--agent-url", help="the bus URL as the agents reach it (default: the controller's)")
    bulk.add_argument("--template", type=Path, help="an agent2.toml to start each node's from (default: files where "
                      "the systemd unit puts them, loggers as in docs/operations.md)")
    bulk.add_argument("--reset", action="store_true", help="give nodes that already have a user a new password "
                      "(default: skip them, and leave their agent2.toml alone)")
    client = acl_commands.add_parser("add-client", parents=[keep], help="create a client user: send commands, "
                                     "read results only")
    client.add_argument("name")
    client.add_argument("--password", help="use this password instead of a random one")
    listing = acl_commands.add_parser("list", help="every user made: agents and clients, roles granted, created, "
                                      "last seen")
    listing.add_argument("--all", action="store_true", help="also the users revoked")
    listing.add_argument("--json", action="store_true", help="one JSON list (times in epoch seconds)")
    revoke = acl_commands.add_parser("revoke", parents=[keep], help="delete agent G:N's user and close its "
                                     "connections")
    revoke.add_argument("gid", type=int)
    revoke.add_argument("nid", type=int)
    revoke_client = acl_commands.add_parser("revoke-client", parents=[keep], help="delete client NAME's user and "
                                            "close its connections")
    revoke_client.add_argument("name")


def _acl(options: argparse.Namespace, config: ControllerConfig) -> int:
    client = redis.Redis(**config.bus.redis_kwargs())
    changes = options.acl != "list"
    try:
        if changes and not options.in_memory:
            aclfile = acl.require_aclfile(client, config.bus.url)
        if options.acl == "add-agent":
            roles = [role.strip() for role in options.roles.split(",") if role.strip()]
            password = acl.add_agent(client, options.gid, options.nid, options.password, roles)
            print(f"# agent {options.gid}:{options.nid}: user {agent_user(options.gid, options.nid)}, "
                  f"password {password}, roles granted: {', '.join(roles) or 'none'}\n# its agent2.toml:\n")
            print(acl.config_snippet(_agent_url(options, config), options.gid, options.nid, password, roles))
        elif options.acl == "add-agents":
            made = _add_agents(client, options, config)
            if not made:
                changes = False
        elif options.acl == "add-client":
            client_user, password = acl.add_client(client, options.name, options.password)
            print(f"# client user {client_user}, password {password}\n# acclient.Client(host, port, password, "
                  f"username={client_user!r}), or ac --username {client_user} --password ...")
        elif options.acl == "list":
            _print_users(acl.list_users(client, revoked=options.all), options.json)
        elif options.acl == "revoke":
            if not acl.revoke_agent(client, options.gid, options.nid):
                print(f"agent {options.gid}:{options.nid} has no user", file=sys.stderr)
                return 1
            print(f"revoked agent {options.gid}:{options.nid}: its user is deleted and its connections closed")
        elif not acl.revoke_client(client, options.name):
            print(f"client {options.name} has no user", file=sys.stderr)
            return 1
        else:
            print(f"revoked client {options.name}: its user is deleted and its connections closed")
        if changes and options.in_memory:
            print("ac-controller acl: not saved (--in-memory): Redis forgets this change when it restarts",
                  file=sys.stderr)
        elif changes:
            acl.save(client)
            print(f"ac-controller acl: saved in the bus's aclfile ({aclfile})", file=sys.stderr)
    except (redis.RedisError, ValueError, ConfigError, OSError, acl.AclError) as exc:
        print(f"ac-controller acl: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


def _agent_url(options: argparse.Namespace, config: ControllerConfig) -> str:
    return options.agent_url or replace(config.bus, username=None, password=None).url


def _add_agents(client: redis.Redis, options: argparse.Namespace, config: ControllerConfig) -> int:
    """Every node of the inventory: its user (unless it has one), its agent2.toml; the number of users made."""
    nodes = fleet.read_inventory(options.inventory)
    template = load_toml(options.template) if options.template else None
    url = _agent_url(options, config)
    made = 0
    try:
        for node in nodes:
            user = agent_user(node.gid, node.nid)
            if acl.user_exists(client, user) and not options.reset:
                print(f"{node.name} {node.hostname}: skipped, user {user} exists (--reset gives it a new password)")
                continue
            password = acl.add_agent(client, node.gid, node.nid, roles=node.roles, hostname=node.hostname)
            made += 1
            path = fleet.node_folder(options.out, node.hostname) / fleet.CONFIG_FILE
            document = fleet.node_config(node, url, user, password, template)
            fleet.write_private(path, _node_header(node) + tomli_w.dumps(document))
            print(f"{node.name} {node.hostname}: user {user}, roles granted: {', '.join(node.roles) or 'none'} "
                  f"-> {path}")
    finally:
        if made and not options.in_memory:
            acl.save(client)  # what was made before a failure is kept too
    return made


def _node_header(node: fleet.Node) -> str:
    made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return "\n".join([
        f"# The agent2.toml of agent {node.name} on {node.hostname}, made by ac-controller acl add-agents at {made}.",
        f"# It goes to {fleet.NODE_CONFIG_DIR}/{fleet.CONFIG_FILE}, mode 0600: it holds the agent's password.",
        "# Every key: configs/agent2.toml (ac-controller files show agent2.toml).", "", ""])


def _print_users(rows: list[acl.UserRow], as_json: bool) -> None:
    if as_json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
        return
    table = [("WHO", "USER", "ENABLED", "CONNECTIONS", "KIND", "ROLES", "HOST", "CREATED", "REFUSED", "LAST SEEN")]
    for row in rows:
        enabled = {"on": "yes", "off": "no"}.get(row.state, row.state)
        roles = "-" if row.roles is None else ",".join(row.roles) or "none"
        seen = "-" if row.last_seen is None else "now" if row.seen == "connected" else \
            f"{_iso(row.last_seen)} ({row.seen})"
        table.append((row.who, row.user, enabled, str(row.connections), row.kind, roles, row.host or "-",
                      _iso(row.created) if row.created else "unknown", str(row.refusals), seen))
    widths = [max(len(line[column]) for line in table) + 2 for column in range(len(table[0]) - 1)]
    for line in table:
        print("".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + line[-1])


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# -- certs ------------------------------------------------------------------------------------------------------


def _certs_parser(commands: argparse._SubParsersAction) -> None:
    certs = commands.add_parser("certs", help="a CA, a certificate for the bus, client certificates (needs the "
                                "cryptography package: pip install 'agentcontroller[certs]')")
    certs_commands = certs.add_subparsers(dest="certs", required=True)
    lifetime = argparse.ArgumentParser(add_help=False)
    lifetime.add_argument("--force", action="store_true", help="replace files already there (rotation)")
    ca = certs_commands.add_parser("ca", parents=[lifetime], help="a new CA: DIR/ca.pem, DIR/ca.key")
    ca.add_argument("dir", type=Path)
    ca.add_argument("--name", default="agentcontroller CA", help="its common name")
    ca.add_argument("--days", type=int, default=3650, help="how long it is valid (default 3650)")
    server = certs_commands.add_parser("server", parents=[lifetime], help="the bus's certificate, for its DNS names "
                                       "and IP addresses: DIR/server/")
    server.add_argument("dir", type=Path)
    server.add_argument("names", nargs="+", help="every DNS name and IP address clients connect to the bus by")
    server.add_argument("--days", type=int, default=825, help="how long it is valid (default 825)")
    client = certs_commands.add_parser("client", parents=[lifetime], help="a client certificate per name (a node's "
                                       "hostname, a controller, a person): DIR/<name>/")
    client.add_argument("dir", type=Path)
    client.add_argument("names", nargs="*", help="the names (also those of their folders)")
    client.add_argument("--inventory", type=Path, help="also one for each node of this inventory, by hostname")
    client.add_argument("--days", type=int, default=825, help="how long they are valid (default 825)")
    listing = certs_commands.add_parser("list", help="the certificates in DIR: what for, names, expiry")
    listing.add_argument("dir", type=Path)


def _certs(options: argparse.Namespace) -> int:
    try:
        from controller import certs
    except ImportError as exc:
        print(f"ac-controller certs: needs the cryptography package ({exc}): pip install 'agentcontroller[certs]'",
              file=sys.stderr)
        return 1
    folder: Path = options.dir
    try:
        if options.certs == "ca":
            path = certs.make_ca(folder, options.name, options.days, options.force)
            print(f"CA {path} (its key {folder / certs.CA_KEY_FILE}: keep it off the bus and the nodes)")
        elif options.certs == "server":
            target = certs.issue_server(folder, options.names, options.days, options.force)
            print(f"server certificate for {', '.join(options.names)} in {target}/: copy that folder to the bus "
                  f"host as /etc/redis/tls (owned by redis), then in redis.conf:\n  tls-cert-file /etc/redis/tls/"
                  f"{certs.SERVER_CERT_FILE}\n  tls-key-file /etc/redis/tls/{certs.SERVER_KEY_FILE}\n  "
                  f"tls-ca-cert-file /etc/redis/tls/{fleet.CA_FILE}\n  tls-auth-clients yes")
        elif options.certs == "client":
            names = list(options.names)
            if options.inventory:
                names += [node.hostname for node in fleet.read_inventory(options.inventory)]
            if not names:
                print("ac-controller certs client: name at least one client, or give --inventory", file=sys.stderr)
                return 2
            for name in dict.fromkeys(names):
                target = certs.issue_client(folder, name, options.days, options.force)
                print(f"{name}: {target / fleet.CERT_FILE}, {target / fleet.KEY_FILE}, {target / fleet.CA_FILE}")
        else:
            found = certs.describe(folder)
            if not found:
                print(f"no certificates in {folder}", file=sys.stderr)
                return 1
            for info in found:
                signed = "" if info.usage == "CA" or info.signed_by_ca else "  NOT SIGNED BY THIS CA"
                print(f"{info.path.relative_to(folder)}  {info.usage}  {info.subject}  names: "
                      f"{', '.join(info.names) or '-'}  expires {info.not_after:%Y-%m-%d}{signed}")
    except (certs.CertError, fleet.InventoryError, OSError) as exc:
        print(f"ac-controller certs: {exc}", file=sys.stderr)
        return 1
    return 0


# -- files ------------------------------------------------------------------------------------------------------

#: What each shipped file is for, by the start of its path.
FILE_USES = (("systemd/", "systemd unit: /etc/systemd/system/"), ("agent2.toml", "every agent key: /etc/ac/"),
             ("controller.toml", "every controller key: /etc/ac/"), ("grid.toml", "ac-grid --config (local grids)"),
             ("prometheus/", "Prometheus rule_files"), ("grafana/", "Grafana: Dashboards, Import"),
             ("scripts/", "example jumpscripts (agent2.toml's [extensions])"))


def _files_parser(commands: argparse._SubParsersAction) -> None:
    files = commands.add_parser("files", help="the systemd units, example configs, alert rules and dashboard that "
                                "the wheel carries: list, show, install")
    files_commands = files.add_subparsers(dest="files", required=True)
    files_commands.add_parser("list", help="every file, and what it is for")
    show = files_commands.add_parser("show", help="print one")
    show.add_argument("name", help="its path in the list, or its file name")
    install = files_commands.add_parser("install", help="copy files into DEST: a file under its name, a folder's "
                                        "files under their paths in it; none named: everything, as listed")
    install.add_argument("dest", type=Path)
    install.add_argument("names", nargs="*", help="files (path or file name) or folders, e.g. ac-agent.service, "
                         "systemd, prometheus")
    install.add_argument("--force", action="store_true", help="replace files that differ")


def _files(options: argparse.Namespace) -> int:
    try:
        if options.files == "list":
            for name in shipped.listing():
                use = next((use for start, use in FILE_USES if name.startswith(start)), "")
                print(f"{name:<32}{use}")
        elif options.files == "show":
            sys.stdout.write(shipped.show(options.name))
        else:
            placed = shipped.install(options.dest, options.names, options.force)
            for step in placed:
                print(f"{step.target}{'' if step.written else ' (already there, unchanged)'}")
            note = shipped.unit_note(placed)
            if note:
                print(note, file=sys.stderr)
    except (shipped.FilesError, OSError) as exc:
        print(f"ac-controller files: {exc}", file=sys.stderr)
        return 1
    return 0
