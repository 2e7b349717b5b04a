"""``ac-agent``: the command line of the agent daemon."""

import argparse
import logging
import os
import resource
import shutil
import sys

from acdaemon.config import ConfigError
from acdaemon.logs import LEVELS, setup_logging
from acdaemon.run import refuse, run_daemon
from agent.config import AgentConfig, load_config
from agent.service import run_agent

log = logging.getLogger("agent")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ac-agent", description="Run commands sent through the bus.")
    parser.add_argument("-c", "--config", required=True, help="agent2.toml")
    parser.add_argument("--log-level", default="INFO", choices=LEVELS)
    parser.add_argument("--check", action="store_true", help="check the config and exit (status 0 if usable)")
    parser.add_argument("--swarm", type=positive_int, default=1, metavar="K",
                        help="host K agent identities in this process: nodes nid .. nid+K-1 (for benchmarks)")
    options = parser.parse_args(argv)
    setup_logging(options.log_level)
    try:
        config = load_config(options.config)
    except ConfigError as exc:
        refuse("ac-agent", exc)
    if options.check:
        print(check_report(config))
        return
    if options.swarm > 1:
        raise_open_files_limit()
    if run_daemon("ac-agent", run_agent, config, options.swarm):
        restart()
    log.info("stopped")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def raise_open_files_limit() -> None:
    """A swarm holds a bus connection per identity (its intake): allow as many files as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def check_report(config: AgentConfig) -> str:
    """What ``--check`` prints about a usable config: what the agent would be, and what to look at."""
    lines = [f"{config.path}: ok",
             f"  agent {config.gid}:{config.nid}, roles {', '.join(config.roles) or '(none)'}, "
             f"max_jobs {config.max_jobs}",
             f"  controllers: {', '.join(f'{name} ({address.url})' for name, address in config.controllers.items())}",
             f"  files: {config.message_id_file}, {config.history_file}, "
             + ", ".join(f"{logger.log_dir} (DB {logger.name})" for logger in config.loggers if logger.type == "DB"),
             f"  metrics: {config.metrics_listen or 'off'}"]
    for name, extension in config.extensions.items():
        binary = extension.binary
        found: bool | str | None
        if os.sep in binary:
            found = os.access(os.path.join(extension.cwd, binary), os.X_OK)
        else:
            found = shutil.which(binary, path=extension.env.get("PATH", os.environ.get("PATH", os.defpath)))
        if not found:
            lines.append(f"  warning: [extensions.{name}] binary {binary!r} cannot be run from here (not found "
                         f"{'in ' + (extension.cwd or 'the working directory') if os.sep in binary else 'on PATH'})")
    return "\n".join(lines)


def restart() -> None:
    """Replace this process with a fresh agent: same interpreter, same command line, same pid.

    The old agent has already stopped every job (long-running ones are in the
    state DB, for the new agent to start), so nothing runs twice.
    """
    log.info("restarting: %s", " ".join(sys.orig_argv))
    logging.shutdown()
    os.execv(sys.executable, sys.orig_argv)
