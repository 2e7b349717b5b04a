"""``ac-controller``: the command line of the controller daemon.

    ac-controller [-c controller.toml] [--bus URL]        run the controller
    ac-controller [-c ...] acl add-agent G N [--roles R,..] create agent G:N's Redis user, granted roles R; print
                                                          its credentials
    ac-controller [-c ...] acl add-client NAME            a client user: send commands, read results only
    ac-controller [-c ...] acl list                       the agents' users
    ac-controller [-c ...] acl revoke G N                 delete it (its connections are closed at once)
"""

import argparse
import logging
import sys
from dataclasses import replace
from functools import partial

import redis

from acdaemon.config import ConfigError
from acdaemon.logs import LEVELS, setup_logging
from acdaemon.run import refuse, run_daemon
from controller import acl
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
    commands = parser.add_subparsers(dest="command", metavar="acl", help="manage the agents' Redis users")
    acl_parser = commands.add_parser("acl", help="one Redis ACL user per agent, limited to its own keys")
    acl_commands = acl_parser.add_subparsers(dest="acl", required=True)
    add = acl_commands.add_parser("add-agent", help="create (or reset) agent G:N's user; print its credentials")
    add.add_argument("gid", type=int)
    add.add_argument("nid", type=int)
    add.add_argument("--password", help="use this password instead of a random one")
    add.add_argument("--roles", default="", help="the roles the agent may register with, comma-separated (default "
                     "none: it is reached by gid and nid only); a registration claiming others is refused")
    add.add_argument("--agent-url", help="the bus URL as the agent reaches it (default: the controller's)")
    client = acl_commands.add_parser("add-client", help="create a client user: send commands, read results only")
    client.add_argument("name")
    client.add_argument("--password", help="use this password instead of a random one")
    acl_commands.add_parser("list", help="the agents' users")
    revoke = acl_commands.add_parser("revoke", help="delete agent G:N's user and close its connections")
    revoke.add_argument("gid", type=int)
    revoke.add_argument("nid", type=int)
    options = parser.parse_args(argv)
    setup_logging(options.log_level)
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


def _acl(options: argparse.Namespace, config: ControllerConfig) -> int:
    client = redis.Redis(**config.bus.redis_kwargs())
    try:
        if options.acl == "add-agent":
            roles = [role.strip() for role in options.roles.split(",") if role.strip()]
            password = acl.add_agent(client, options.gid, options.nid, options.password, roles)
            address = config.bus
            url = options.agent_url or replace(address, username=None, password=None).url
            print(f"# agent {options.gid}:{options.nid}: user {agent_user(options.gid, options.nid)}, "
                  f"password {password}, roles granted: {', '.join(roles) or 'none'}\n# its agent2.toml:\n")
            print(acl.config_snippet(url, options.gid, options.nid, password, roles))
        elif options.acl == "add-client":
            client_user, password = acl.add_client(client, options.name, options.password)
            print(f"# client user {client_user}, password {password}\n# acclient.Client(host, port, password, "
                  f"username={client_user!r}), or ac --username {client_user} --password ...")
        elif options.acl == "list":
            print(f"{'AGENT':<10}{'USER':<24}{'ENABLED':<9}CONNECTIONS")
            for user in acl.list_agents(client):
                print(f"{user.gid}:{user.nid:<8}{user.user:<24}{'yes' if user.enabled else 'no':<9}{user.connections}")
        elif not acl.revoke_agent(client, options.gid, options.nid):
            print(f"agent {options.gid}:{options.nid} has no user", file=sys.stderr)
            return 1
        else:
            print(f"revoked agent {options.gid}:{options.nid}: its user is deleted and its connections closed")
    except (redis.RedisError, ValueError) as exc:
        print(f"ac-controller acl: {exc}", file=sys.stderr)
        return 1
    return 0
