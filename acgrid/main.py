"""``ac-grid``: a local grid on this machine, for trying things out.

    ac-grid --agents 3 --roles web          # run until Ctrl-C
    ac-grid --demo                          # start, run the demo, stop
    ac-grid --config grid.toml              # agents from a file
    ac-grid --agents 1000 --swarm           # 1 000 agents hosted by one process
    ac-grid --sentinel                      # a bus that survives losing its master: Redis Sentinel
"""

import argparse
import contextlib
import io
import shlex
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import cast

from acdaemon.config import ConfigError, Option, list_of_strings, load_toml, positive, take_section
from acgrid.demo import run_demo
from acgrid.launcher import AgentSpec, Grid, GridError

GRID_SCHEMA = {"controllers": Option(int, 1, positive), "heartbeat_interval": Option((int, float), 0.5, positive)}
AGENT_SCHEMA = {"gid": Option(int, check=positive), "nid": Option(int, check=positive),
                "roles": Option(list, [], list_of_strings), "config": Option(dict, {}),
                "swarm": Option(int, 1, positive)}
#: The loggers of ``configs/agent2.toml``, for the agents of a grid run to try things out: their output shows
#: live in ``ac exec --follow`` and ``ac logs -f`` (AC), ``ac logs`` reads it afterwards (DB). An [[agents]]
#: table with a ``logging`` of its own keeps that.
TRIAL_LOGGING = {"logging": {"db": {"type": "DB", "log_dir": "logs", "levels": "*"},
                             "ac": {"type": "AC", "levels": "2,4,7-9"},
                             "console": {"type": "console", "levels": "7-9"}}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ac-grid", description="Run a local grid: redis, controllers, agents.")
    parser.add_argument("--agents", type=int, default=2, help="number of agents (default 2)")
    parser.add_argument("--gid", type=int, default=1, help="grid id of the agents (default 1)")
    parser.add_argument("--roles", default="", help="comma-separated roles of every agent")
    parser.add_argument("--swarm", action="store_true",
                        help="host the agents in one process (ac-agent --swarm): for hundreds or thousands of them")
    parser.add_argument("--controllers", type=int, default=None, help="number of controllers (default 1)")
    parser.add_argument("--config", help="grid TOML: [grid] and [[agents]] tables (overrides --agents)")
    parser.add_argument("--bus", help="use this Redis instead of starting a private one")
    parser.add_argument("--tls", action="store_true", help="a TLS-only private redis-server, certificates generated")
    parser.add_argument("--acl", action="store_true",
                        help="least privilege: default user off, an admin user, one user per agent, a client user")
    parser.add_argument("--sentinel", action="store_true",
                        help="a highly available bus: a master, a replica and three sentinels on loopback ports; "
                             "every part follows a failover (try: kill -9 the master's pid, printed)")
    parser.add_argument("--demo", action="store_true", help="run the demo through the client, then stop")
    parser.add_argument("--log-level", default="WARNING", help="log level of the daemons (default WARNING)")
    options = parser.parse_args(argv)
    # "grid up" shows at once, also through a pipe (the interpreter's stdout is a TextIOWrapper)
    cast(io.TextIOWrapper, sys.stdout).reconfigure(line_buffering=True)
    try:
        grid = _grid_from(options)
    except ConfigError as exc:
        sys.exit(f"ac-grid: {exc}")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop_once)
    try:
        with grid:
            members = [name for spec in grid.agent_specs.values() for name in spec.members]
            shown = ", ".join(members[:10]) + (f" and {len(members) - 10} more" if len(members) > 10 else "")
            swarms = f" (swarms' in {grid.swarm_workdir})" if grid.swarm_workdir else ""
            print(f"grid up: bus {grid.bus_url}, agents {shown}; files in {grid.workdir}{swarms}")
            if grid.topology is not None:
                master = grid.topology.master()
                nodes = ", ".join(f"{'master' if node is master else 'replica'} 127.0.0.1:{node.port} (pid "
                                  f"{node.process.pid if node.process else '-'})" for node in grid.topology.nodes)
                print(f"sentinel: service {grid.topology.address.service!r}, {nodes}")
            if options.demo:
                run_demo(grid.client(), sorted(grid.agent_specs.values(), key=lambda spec: (spec.gid, spec.nid)))
                return
            _print_hints(grid)
            print("press Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
            print("stopping (every process, then the files; Ctrl-C again is ignored)")
    except KeyboardInterrupt:  # while starting, or during the demo: stopped all the same
        sys.exit("ac-grid: interrupted; every process stopped and the files removed")
    except GridError as exc:
        sys.exit(f"ac-grid: {exc}")


def _stop_once(signum: int, frame: object) -> None:
    """The first Ctrl-C (or SIGTERM) stops the grid; the next ones are ignored, since one arriving while it stops
    would cut the stop short and leave processes and files behind."""
    for ignored in (signal.SIGINT, signal.SIGTERM):
        signal.signal(ignored, signal.SIG_IGN)
    raise KeyboardInterrupt


def _print_hints(grid: Grid) -> None:
    """What to paste in another terminal to use the grid with ``ac``: the bus, and with --acl / --tls the client
    user's credentials and the certificate files."""
    exports = {"AC_BUS": grid.bus_url}
    if grid.acl:
        exports["AC_USERNAME"], exports["AC_PASSWORD"] = grid.client_user()
    if grid.tls_files is not None:
        exports.update(AC_CA_FILE=str(grid.tls_files.ca), AC_CERT_FILE=str(grid.tls_files.client_cert),
                       AC_KEY_FILE=str(grid.tls_files.client_key))
    beside = Path(sys.executable).parent / "ac"
    ac = str(beside) if beside.exists() else shutil.which("ac") or "ac"
    print("in another terminal, paste:")
    for name, value in exports.items():
        print(f"  export {name}={shlex.quote(value)}")
    print(f"  {shlex.quote(ac)} agents        # then: {shlex.quote(ac)} exec --all -- uptime; {shlex.quote(ac)} --help")


def _grid_from(options: argparse.Namespace) -> Grid:
    controllers, heartbeat = 1, 0.5
    if options.config:
        document = load_toml(options.config)
        settings = take_section(document.get("grid"), GRID_SCHEMA, f"{options.config} [grid]")
        controllers, heartbeat = settings["controllers"], settings["heartbeat_interval"]
        tables = document.get("agents", [])
        if not isinstance(tables, list) or not tables:
            raise ConfigError(f"{options.config}: expected one or more [[agents]] tables")
        specs = []
        for index, table in enumerate(tables):
            agent = take_section(table, AGENT_SCHEMA, f"{options.config} [[agents]] #{index + 1}")
            config = agent["config"] if "logging" in agent["config"] else {**TRIAL_LOGGING, **agent["config"]}
            specs.append(AgentSpec(agent["gid"], agent["nid"], tuple(agent["roles"]), config, agent["swarm"]))
    else:
        roles = tuple(role for role in options.roles.split(",") if role)
        if options.swarm:
            specs = [AgentSpec(options.gid, 1, roles, TRIAL_LOGGING, swarm=options.agents)]
        else:
            specs = [AgentSpec(options.gid, nid, roles, TRIAL_LOGGING) for nid in range(1, options.agents + 1)]
    return Grid(specs, controllers=options.controllers or controllers, bus_url=options.bus,
                heartbeat_interval=heartbeat, log_level=options.log_level, tls=options.tls,
                acl=options.acl, sentinel=options.sentinel)
