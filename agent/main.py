"""``ac-agent``: the command line of the agent daemon."""

import argparse
import logging
import os
import sys

import trio

from agent.config import load_config
from agent.service import StartError, run_agent
from daemon.config import ConfigError
from daemon.logs import setup_logging

log = logging.getLogger("agent")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ac-agent", description="Run commands sent through the bus.")
    parser.add_argument("-c", "--config", required=True, help="agent2.toml")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    options = parser.parse_args(argv)
    setup_logging(options.log_level)
    try:
        config = load_config(options.config)
    except ConfigError as exc:
        sys.exit(f"ac-agent: {exc}")
    try:
        restarting = trio.run(run_agent, config)
    except BaseExceptionGroup as group:  # the nurseries it crossed wrapped it
        refused = group.subgroup(StartError)
        if refused is None:
            raise
        while isinstance(refused, BaseExceptionGroup):
            refused = refused.exceptions[0]
        sys.exit(f"ac-agent: {refused}")
    if restarting:
        restart()
    log.info("stopped")


def restart() -> None:
    """Replace this process with a fresh agent: same interpreter, same command line, same pid.

    The old agent has already stopped every job (long-running ones are in the
    state DB, for the new agent to start), so nothing runs twice.
    """
    log.info("restarting: %s", " ".join(sys.orig_argv))
    logging.shutdown()
    os.execv(sys.executable, sys.orig_argv)
