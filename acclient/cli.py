"""``ac``: the operator's command line.

    ac agents                                   who is there
    ac exec -g 1 -n 1 -- ls -l /                run a command on one node
    ac exec -r web --fanout -- uptime           ... on every node of a role
    ac jobs | ac job ID | ac logs [-f] ID       what ran, how it ended, what it said
    ac kill ID                                  stop it
    ac info 1 1 cpu|mem|disk|nic|os             what a node has

Tables for people, ``--json`` for scripts. The bus is ``--bus URL`` or ``$AC_BUS``.
"""

import argparse
import json
import os
import sys
import time
from typing import Any

from acclient.client import Client
from acclient.cmd import NO_REPLY, Cmd
from acclient.errors import JobError
from acclient.runargs import RunArgs
from protocol.command import CONTROLLER_CMD
from protocol.levels import parse_levels
from protocol.states import FINAL_STATES

DEFAULT_BUS = "redis://127.0.0.1:6379/0"
INFO_KINDS = ("cpu", "mem", "disk", "nic", "os")


def main(argv: list[str] | None = None) -> None:
    options = _parser().parse_args(argv)
    client = Client.from_url(options.bus, username=options.username, password=options.password,
                             ca_file=options.ca_file, cert_file=options.cert_file, key_file=options.key_file)
    try:
        sys.exit(options.run(client, options) or 0)
    except (JobError, TimeoutError, ValueError) as exc:
        sys.exit(f"ac: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ac", description="Operate the agent controller.")
    parser.add_argument("--bus", default=os.environ.get("AC_BUS", DEFAULT_BUS),
                        help=f"bus URL (default: $AC_BUS or {DEFAULT_BUS})")
    parser.add_argument("--username", default=os.environ.get("AC_USERNAME"), help="Redis user ($AC_USERNAME)")
    parser.add_argument("--password", default=os.environ.get("AC_PASSWORD"), help="Redis password ($AC_PASSWORD)")
    parser.add_argument("--ca-file", help="CA certificate of a rediss:// bus")
    parser.add_argument("--cert-file", help="client certificate for a rediss:// bus")
    parser.add_argument("--key-file", help="key of the client certificate")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    commands = parser.add_subparsers(required=True, metavar="command")

    agents = commands.add_parser(
        "agents", help="list agents: gid:nid, roles, host, alive, jobs, version, uptime, last heartbeat",
        description="RUNNING: jobs routed to the agent and not answered yet; JOBS: jobs the agent holds (running or "
                    "waiting for a slot) as of its last heartbeat; HEARTBEAT: how long ago that was.")
    agents.set_defaults(run=_agents)

    run = commands.add_parser("exec", help="run a command on agents; results as they arrive")
    run.add_argument("-g", "--gid", type=int, help="grid id")
    run.add_argument("-n", "--nid", type=int, help="node id (with -g)")
    run.add_argument("-r", "--role", help="a role instead of a node ('*': any agent)")
    run.add_argument("--fanout", action="store_true", help="every agent of the role")
    run.add_argument("--timeout", type=float, default=60, help="seconds to wait for results (default 60)")
    run.add_argument("--max-time", type=float, default=0, help="kill the process after this many seconds")
    run.add_argument("--data", help="stdin of the command")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    run.set_defaults(run=_exec)

    jobs = commands.add_parser("jobs", help="recent commands and their states")
    jobs.add_argument("--count", type=int, default=20)
    jobs.set_defaults(run=_jobs)

    job = commands.add_parser("job", help="one command: every agent's result")
    job.add_argument("id")
    job.set_defaults(run=_job)

    logs = commands.add_parser("logs", help="a command's messages from the agents' DBs")
    logs.add_argument("id")
    logs.add_argument("-f", "--follow", action="store_true", help="follow live until the job ends")
    logs.add_argument("--levels", default="*", help="only these levels, e.g. 1,2,6-9 (default *)")
    logs.set_defaults(run=_logs)

    kill = commands.add_parser("kill", help="kill a command wherever it still runs")
    kill.add_argument("id")
    kill.set_defaults(run=_kill)

    info = commands.add_parser("info", help="what a node has")
    info.add_argument("gid", type=int)
    info.add_argument("nid", type=int)
    info.add_argument("kind", choices=INFO_KINDS)
    info.set_defaults(run=_info)
    return parser


# -- commands ------------------------------------------------------------------------------

def _agents(client: Client, options: argparse.Namespace) -> int:
    agents = client.list_agents()
    if options.json:
        return _print_json(agents)
    now = time.time()
    _table(["AGENT", "ROLES", "HOST", "ALIVE", "RUNNING", "JOBS", "VERSION", "UPTIME", "HEARTBEAT"],
           [[f"{a['gid']}:{a['nid']}", ",".join(a["roles"]), a.get("hostname") or "", "yes" if a["alive"] else "no",
             a["running"], a.get("jobs"), a.get("version") or "", _duration(a.get("uptime")),
             _duration(now - a["last_heartbeat"] / 1000, " ago") if a.get("last_heartbeat") else ""]
            for a in agents])
    return 0


def _duration(seconds: float | None, suffix: str = "") -> str:
    """``seconds`` the way people say it: 4s, 12m 5s, 3h 20m, 2d 4h."""
    if seconds is None:
        return ""
    seconds = max(0, round(seconds))
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // smaller_size}{smaller}{suffix}"
    return f"{seconds}s{suffix}"


def _exec(client: Client, options: argparse.Namespace) -> int:
    argv = options.argv[1:] if options.argv[:1] == ["--"] else options.argv
    if not argv:
        raise ValueError("nothing to run: ac exec [-g G -n N | -r ROLE [--fanout]] -- CMD ARGS...")
    args = RunArgs(max_time=options.max_time)
    cmd = client.execute(options.gid, options.nid, argv[0], argv[1:], args=args, data=options.data,
                         role=options.role, fanout=options.fanout)
    progress = _Progress(cmd) if options.fanout and sys.stderr.isatty() and not options.json else None
    results = []
    for job in cmd.iter_results(timeout=options.timeout):
        results.append(job.dump())
        if progress:
            progress.clear()
        if not options.json:
            _print_result(job.dump())
        if progress:
            progress.show(len(results))
    report = cmd.report()
    silent = sorted(f"{g}:{n}" for (g, n), verdict in report.items() if verdict == NO_REPLY)
    if options.json:
        _print_json({"id": cmd.id, "results": results, "no_reply": silent})
    elif silent:
        print(f"no reply within {options.timeout:g} s from: {', '.join(silent)}", file=sys.stderr)
    if not report:
        print(f"nothing answered command {cmd.id} within {options.timeout:g} s", file=sys.stderr)
    return 0 if report and all(verdict == "returned" for verdict in report.values()) else 1


def _jobs(client: Client, options: argparse.Namespace) -> int:
    commands = client.get_cmds(0, options.count)
    rows = []
    for command in commands:
        states = {f"{g}:{n}": job.get("state") for (g, n), job in client.get_cmd_jobs(command["id"]).items()}
        command["states"] = states
        rows.append([command["id"], _target(command), _summary(command)[:60],
                     " ".join(f"{agent}={state}" for agent, state in sorted(states.items()))])
    if options.json:
        return _print_json(commands)
    _table(["ID", "TARGET", "COMMAND", "STATES"], rows)
    return 0


def _job(client: Client, options: argparse.Namespace) -> int:
    jobs = {f"{g}:{n}": job.dump() for (g, n), job in sorted(client.get_cmd_jobs(options.id).items())}
    if not jobs:
        raise ValueError(f"no command {options.id} (or its results expired)")
    if options.json:
        return _print_json(jobs)
    for job in jobs.values():
        _print_result(job)
    return 0


def _logs(client: Client, options: argparse.Namespace) -> int:
    cmd = Cmd(client, options.id, None, None, "", None, None, None, False)
    if not any(gid and nid for gid, nid in cmd.targets()):
        raise ValueError(f"no command {options.id} ran on any agent (or its results expired)")
    if options.follow:
        messages = cmd.follow_msgs(history=True)
    else:
        messages = (message for message in cmd.stored_msgs() if message["level"] in parse_levels(options.levels))
    for message in messages:
        _print_message(message, options.json)
    return 0


def _kill(client: Client, options: argparse.Namespace) -> int:
    jobs = client.get_cmd_jobs(options.id)
    running = [(g, n) for (g, n), job in jobs.items() if g and n and job.get("state") not in FINAL_STATES]
    if not running:
        print(f"command {options.id} is not running anywhere", file=sys.stderr)
        return 1
    for gid, nid in running:
        client.get_by_id(gid, nid, options.id).kill()
        print(f"killed {options.id} on {gid}:{nid}")
    return 0


def _info(client: Client, options: argparse.Namespace) -> int:
    answer = getattr(client, f"get_{options.kind}_info")(options.gid, options.nid)
    if options.json:
        return _print_json(answer)
    if isinstance(answer, list) and answer and isinstance(answer[0], dict):
        columns = list(answer[0])
        _table([column.upper() for column in columns], [[_cell(row.get(c)) for c in columns] for row in answer])
    elif isinstance(answer, dict):
        width = max(map(len, answer), default=0)
        for key, value in answer.items():
            print(f"{key:<{width}}  {_cell(value)}")
    else:
        print(answer)
    return 0


# -- output --------------------------------------------------------------------------------

class _Progress:
    def __init__(self, cmd: Cmd) -> None:
        self.cmd = cmd

    def show(self, done: int) -> None:
        expected = max(len(self.cmd.targets()), done)
        filled = int(30 * done / expected) if expected else 0
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{expected}")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\033[K")


def _print_result(job: dict[str, Any]) -> None:
    print(f"== {job.get('gid')}:{job.get('nid')} {job.get('state')} ({job.get('time')} ms)")
    output = job.get("data") or (job.get("streams") or ["", ""])[0]
    if output:
        print(output.rstrip("\n"))
    stderr = (job.get("streams") or ["", ""])[1]
    if stderr:
        print(stderr.rstrip("\n"), file=sys.stderr)


def _print_message(message: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(message))
    else:
        print(f"[{message.get('epoch')}] {message.get('level'):>2} {message.get('data')}")


def _print_json(value: Any) -> int:
    print(json.dumps(value, indent=2, default=str))
    return 0


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[[_cell(value) for value in row] for row in rows]]
    widths = [max(len(row[index]) for row in cells) for index in range(len(headers))]
    for row in cells:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return "" if value is None else str(value)


def _target(command: dict[str, Any]) -> str:
    if command.get("cmd") == CONTROLLER_CMD:
        return "controller"
    if command.get("nid"):
        return f"{command.get('gid')}:{command.get('nid')}"
    roles = command.get("role") or ",".join(command.get("roles") or [])
    grid = f" in {command['gid']}" if command.get("gid") else ""
    return f"role {roles}{grid}{' fanout' if command.get('fanout') else ''}"


def _summary(command: dict[str, Any]) -> str:
    args = command.get("args") or {}
    words = [str(args["name"]), *(str(arg) for arg in args.get("args") or [])] if args.get("name") else []
    return " ".join([command.get("cmd", ""), *words])
