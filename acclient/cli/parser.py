"""The parser of ``ac``: every subcommand, option, example and exit code.

This module imports only the standard library, so the build (``setup.py``) can load it by its path, without the
package or its dependencies, and generate the shell completions and the man page from it.
"""

import argparse
import enum
from importlib import metadata

DEFAULT_BUS = "redis://127.0.0.1:6379/0"
INFO_KINDS = ("cpu", "mem", "disk", "nic", "os")
SHELLS = ("bash", "zsh", "tcsh")
#: Levels ``ac exec --follow`` asks the agents to send live (and ``ac logs -f`` shows) unless told otherwise:
#: every message level, not the result levels (those come with the results).
FOLLOW_LEVELS = "1-9"
#: A file argument, for the completion scripts (``shtab.FILE``, spelled out: this module imports no shtab).
FILE = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}


class Exit(enum.IntEnum):
    """The exit status of ``ac``. When several apply, the highest of 1, 3 and 4 wins."""

    OK = 0  # every target succeeded
    FAILED = 1  # some target failed: ERROR, TIMEOUT, KILLED, UNKNOWN_CMD, DUPLICATE_ID, SKIPPED; or the command did
    USAGE = 2  # a bad option, id or bus URL
    NOT_ALIVE = 3  # some target's agent is not alive, or was lost while it ran the job
    NO_REPLY = 4  # some targets had not answered when --timeout ran out (their jobs go on)
    NO_MATCH = 5  # no agent matched the targets: nothing ran
    UNREACHABLE = 6  # the bus cannot be reached, refused the credentials, or TLS failed
    NO_CONTROLLER = 7  # no controller is alive on the bus: nothing would be routed
    LOST = 8  # the bus lost the command (Redis restarted without its data, or a failover lost it)
    INTERRUPTED = 130  # Ctrl-C: ac stopped, the job goes on
    PIPE_CLOSED = 141  # the reader of the output went away (ac logs ID | head -1): ac stops quietly


EXIT_HELP = {
    Exit.OK: "every target succeeded",
    Exit.FAILED: "some target failed (ERROR, TIMEOUT, KILLED, UNKNOWN_CMD, DUPLICATE_ID, SKIPPED), or the "
                 "command did not succeed",
    Exit.USAGE: "usage error: a bad option, id or bus URL",
    Exit.NOT_ALIVE: "some target's agent is not alive, or was lost while running the job",
    Exit.NO_REPLY: "some targets had not answered when --timeout ran out (their jobs go on)",
    Exit.NO_MATCH: "no agent matched the targets: nothing ran",
    Exit.UNREACHABLE: "the bus cannot be reached, refused the credentials, or TLS failed",
    Exit.NO_CONTROLLER: "no controller is alive on the bus",
    Exit.LOST: "the bus lost the command (Redis restarted without its data, or a failover lost it)",
    Exit.INTERRUPTED: "interrupted (Ctrl-C): ac stopped waiting, the job goes on",
    Exit.PIPE_CLOSED: "the output's reader went away (ac logs ID | head -1)",
}


def version() -> str:
    try:
        return metadata.version("agentcontroller")
    except metadata.PackageNotFoundError:
        return "unknown"


def exit_codes_text() -> str:
    lines = [f"  {int(code):>3}  {text}" for code, text in EXIT_HELP.items()]
    return "exit status (with several, the highest of 1, 3 and 4):\n" + "\n".join(lines)


DESCRIPTION = """\
Operate the agent controller: run commands on agents and read what they did.

The bus is --bus URL, else $AC_BUS, else redis://127.0.0.1:6379/0 (rediss:// for TLS, unix:///path;
redis+sentinel://h1:26379,h2:26379/<service>/<db> finds the master through Sentinel and follows a failover).
Credentials: --username/--password ($AC_USERNAME, $AC_PASSWORD); TLS: --ca-file, --cert-file, --key-file
($AC_CA_FILE, $AC_CERT_FILE, $AC_KEY_FILE). These and --json, --jsonl, --utc, --debug go anywhere on the line.
Job ids may be shortened to any unambiguous prefix of a recent command's id."""

EXAMPLES = """\
examples:
  ac agents                                   who is there (ac agents --dead: who is not)
  ac exec -g 1 -n 1 -- ls -l /                run a command on node 1:1
  ac exec -r web --fanout --group -- uptime   on every node of role web, identical outputs folded
  ac exec --all --shell 'df -h | tail -1'     on every agent, through sh -c
  ac exec -r web --fanout --batch 10% --max-errors 2 -- ./upgrade.sh    in waves, stop on failures
  ac exec -t 1:1,2:4 --follow -- ./build.sh   live output, each line prefixed by its agent
  ac exec --async -r db --fanout -- vacuumdb  print the job id and return; then: ac wait ID
  ac jobs | ac job ID | ac logs -f ID | ac kill ID
  ac doctor                                   what is wrong with the bus

""" + exit_codes_text()


def build_parser() -> argparse.ArgumentParser:
    """The whole command line of ``ac``."""
    parser = argparse.ArgumentParser(prog="ac", description=DESCRIPTION, epilog=EXAMPLES, parents=[_common(True)],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str = "", epilog: str = "") -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=description or help, parents=[_common(False)],
                                  epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(command=name)
        return sub

    agents = command(
        "agents", "list the agents, or forget one that is gone",
        "AGENT, ROLES, HOST; ALIVE: its heartbeat is current; RUNNING: jobs routed to it and not answered yet; "
        "JOBS: jobs it holds (running or waiting for a slot) as of its last heartbeat; VERSION; UPTIME; HEARTBEAT: "
        "how long ago it last beat. Ends with a count line.",
        "examples:\n  ac agents -r web --dead\n  ac agents forget 2:2\n")
    agents.add_argument("-r", "--role", help="only agents holding this role")
    alive = agents.add_mutually_exclusive_group()
    alive.add_argument("--alive", dest="alive", action="store_const", const=True, help="only live agents")
    alive.add_argument("--dead", dest="alive", action="store_const", const=False, help="only agents not alive")
    agent_actions = agents.add_subparsers(dest="agents_action", metavar="ACTION")
    forget = agent_actions.add_parser(
        "forget", help="drop the registration of agents long dead (an alive or unknown one is an error)",
        parents=[_common(False)])
    forget.add_argument("agents", nargs="+", metavar="GID:NID")
    forget.set_defaults(command="agents-forget")

    run = command(
        "exec", "run a command on agents and report each one's result, then a summary",
        "Run CMD ARGS (no shell; --shell for one) on the chosen agents. The job id goes to stderr at once; "
        "results are printed as they arrive (--group: folded at the end), then a summary line on stderr. "
        "Ctrl-C stops ac, not the job: it says how to follow, wait for or kill it. Piped stdin goes to the "
        "command's stdin.",
        "examples:\n"
        "  ac exec -g 1 -n 1,3,5 -- systemctl is-active nginx\n"
        "  ac exec -r web -r eu --fanout -x 1:3 -- uptime      (agents holding both roles, but 1:3)\n"
        "  ac exec --hosts 'web-*' --fanout --group -- cat /etc/debian_version\n"
        "  ac exec --all --batch 5 --batch-wait 10 --max-errors 1 -- ./deploy.sh\n"
        "  ac exec -g 1 -n 1 --retcode-passthrough -- test -f /etc/ready\n"
        "  tar c conf | ac exec -g 1 -n 2 -- tar x -C /srv\n\n" + exit_codes_text())
    _targeting(run)
    _rollout(run)
    what = run.add_argument_group("what runs")
    what.add_argument("--shell", metavar="SCRIPT", help="run SCRIPT with sh -c (pipes, globs, ...)")
    what.add_argument("--data", help="the command's stdin (default: ac's stdin when it is not a terminal)")
    what.add_argument("--no-stdin", action="store_true", help="do not forward ac's stdin")
    what.add_argument("--max-time", type=float, default=0, metavar="S",
                      help="the agent kills the process after S seconds (default: no limit)")
    what.add_argument("--ttl", type=float, metavar="S",
                      help="never run it if no controller routed it within S seconds")
    what.add_argument("--result-ttl", type=int, metavar="S",
                      help="keep its results S seconds after their last update (default: the controllers' "
                           "result_ttl, 24 h)")
    what.add_argument("--tags", help="a string copied into every job of the command")
    what.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command and its arguments")
    _waiting(run)
    _output(run, follow=True)
    run.add_argument("--async", dest="detach", action="store_true",
                     help="send it, print its id on stdout and return (then: ac wait ID, ac logs -f ID)")

    wait = command("wait", "wait for a command sent earlier (ac exec --async, or one left by Ctrl-C)",
                   "Wait until every agent of command ID answered (or --timeout), print the results as ac exec "
                   "does and exit as it would.", "example:\n  ac wait 3f2a\n\n" + exit_codes_text())
    wait.add_argument("id", help="command id (or an unambiguous prefix)")
    _waiting(wait)
    _output(wait, follow=False)

    jobs = command("jobs", "recent commands: age, target, command, counts per state",
                   "The newest commands first; commands ac and clients use to ask things (list_agents, get_msgs, "
                   "kill, ...) are hidden unless --all.")
    jobs.add_argument("--count", type=int, default=20, help="how many (default 20)")
    jobs.add_argument("--all", action="store_true", help="also the internal commands")

    job = command("job", "one command: every agent's result, a rollout's progress, the summary")
    job.add_argument("id", help="command id (or an unambiguous prefix)")

    logs = command("logs", "a command's messages, from every agent it went to",
                   "The messages the agents kept in their DBs (an agent that cannot be asked is named on "
                   "stderr); with -f, then the live ones until the jobs end. Each line: time, agent, level, text.",
                   "examples:\n  ac logs 3f2a --levels 1,2\n  ac logs -f 3f2a\n  ac logs 3f2a | head -1\n")
    logs.add_argument("id", help="command id (or an unambiguous prefix)")
    logs.add_argument("-f", "--follow", action="store_true", help="then follow live until the jobs end")
    logs.add_argument("--levels", default="*", help="only these levels, e.g. 1,2,6-9 (default: all)")
    logs.add_argument("--timeout", type=float, default=30, metavar="S",
                      help="seconds each agent may take to answer (default 30)")

    kill = command("kill", "kill a command on every agent where it still runs; each one's outcome")
    kill.add_argument("id", help="command id (or an unambiguous prefix)")
    kill.add_argument("--timeout", type=float, default=30, metavar="S",
                      help="seconds each agent may take to answer (default 30)")

    info = command("info", "what a node has: cpu, mem, disk, nic, os")
    info.add_argument("gid", type=int)
    info.add_argument("nid", type=int)
    info.add_argument("kind", choices=INFO_KINDS)

    command("doctor", "what is wrong with the bus, one finding a line with what to do",
            "Checks: the bus answers with these credentials, TLS, a controller alive, the depth of cmds_queue, "
            "dead letters, agents down, persistence (appendonly), maxmemory and maxmemory-policy (noeviction), "
            "the ACL file. Exit 0 when all is well, 1 when something is not, 6 when the bus cannot be used, 7 "
            "when no controller is alive.")

    completion = command("completion", "print a shell completion script",
                         "Print the completion script for SHELL (generated from this parser when the package "
                         "was built).", "example:\n  ac completion bash > /etc/bash_completion.d/ac\n")
    completion.add_argument("shell", choices=SHELLS)
    command("manpage", "print the man page (roff)",
            "Print the man page (generated from this parser when the package was built).",
            "example:\n  ac manpage > /usr/local/share/man/man1/ac.1\n")
    return parser


def _common(top: bool) -> argparse.ArgumentParser:
    """The options every subcommand takes too; below the top they default to nothing, so ``ac --json agents``
    and ``ac agents --json`` mean the same."""
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    bus = common.add_argument_group("the bus (anywhere on the line)")
    bus.add_argument("--bus", metavar="URL", default=default(None),
                     help=f"bus URL (default: $AC_BUS, else {DEFAULT_BUS})")
    bus.add_argument("--username", default=default(None), help="Redis user (default: $AC_USERNAME)")
    bus.add_argument("--password", default=default(None), help="Redis password (default: $AC_PASSWORD)")
    bus.add_argument("--sentinel-username", default=default(None),
                     help="user of the sentinels, with a redis+sentinel:// bus (default: $AC_SENTINEL_USERNAME)")
    bus.add_argument("--sentinel-password", default=default(None),
                     help="password of the sentinels (default: $AC_SENTINEL_PASSWORD)")
    for name, what in (("ca-file", "CA certificate of a rediss:// bus"), ("cert-file", "client certificate"),
                       ("key-file", "key of the client certificate")):
        env = "AC_" + name.upper().replace("-", "_")
        action = bus.add_argument(f"--{name}", metavar="FILE", default=default(None),
                                  help=f"{what} (default: ${env})")
        action.complete = FILE  # type: ignore[attr-defined]  # read by shtab
    bus.add_argument("--connect-timeout", type=float, metavar="S", default=default(3.0),
                     help="seconds to reach the bus before giving up (default 3)")
    output = common.add_argument_group("output (anywhere on the line)")
    output.add_argument("--json", action="store_true", default=default(False), help="one JSON document")
    output.add_argument("--jsonl", action="store_true", default=default(False),
                        help="one JSON object per line, as they come (results, messages, rows)")
    output.add_argument("--utc", action="store_true", default=default(False), help="times in UTC, not local time")
    output.add_argument("--debug", action="store_true", default=default(False),
                        help="show tracebacks instead of one line")
    output.add_argument("--version", action="version", version=f"ac (agentcontroller) {version()}")
    return common


def _targeting(run: argparse.ArgumentParser) -> None:
    where = run.add_argument_group("where it runs")
    where.add_argument("-g", "--gid", type=int, help="grid id: with -n, of the nodes; with a role, limits it")
    where.add_argument("-n", "--nid", metavar="NID[,NID...]", help="node id(s) in grid -g: -n 1 or -n 1,3,5")
    where.add_argument("-t", "--targets", action="append", metavar="GID:NID[,...]",
                       help="exactly these agents: -t 1:1,2:4 (repeatable)")
    where.add_argument("-r", "--role", action="append",
                       help="agents holding this role ('*': any); repeated: holding all of them")
    where.add_argument("--hosts", metavar="PATTERN", help="agents whose hostname matches, e.g. 'web-*'")
    where.add_argument("-x", "--exclude", action="append", metavar="GID:NID[,...]",
                       help="none of these agents (repeatable)")
    where.add_argument("--fanout", action="store_true", help="every matching agent, not the least busy one")
    where.add_argument("-a", "--all", action="store_true", help="every agent (as -r '*' --fanout)")


def _rollout(run: argparse.ArgumentParser) -> None:
    waves = run.add_argument_group("rollout: a fanout in waves")
    waves.add_argument("--batch", metavar="N|P%", help="start N targets (or P%% of them) at a time")
    waves.add_argument("--batch-wait", type=float, metavar="S", help="seconds between waves (default 0)")
    waves.add_argument("--max-errors", metavar="N|P%",
                       help="start no further wave once more than N (or P%%) targets failed")


def _waiting(command: argparse.ArgumentParser) -> None:
    command.add_argument("--timeout", type=float, default=60, metavar="S",
                         help="seconds to wait for the results (default 60; 0: no limit)")


def _output(command: argparse.ArgumentParser, follow: bool) -> None:
    shown = command.add_argument_group("what is shown")
    shown.add_argument("--group", action="store_true",
                       help="fold identical outputs: one block per distinct output, with its agents")
    if follow:
        shown.add_argument("-f", "--follow", action="store_true",
                           help="print the output live, each line prefixed by its agent")
        shown.add_argument("--levels", default=FOLLOW_LEVELS,
                           help=f"with --follow or --async: the levels the agents send live (default "
                                f"{FOLLOW_LEVELS}), for this command's output and for ac logs -f")
    shown.add_argument("--retcode-passthrough", action="store_true",
                       help="one target: exit with the exit status of its process")
    progress = shown.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_const", const=True,
                          help="a progress line on stderr (default: when stderr is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                          help="no progress line")
