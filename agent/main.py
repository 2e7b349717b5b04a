"""``ac-agent``: the command line of the agent daemon."""

import argparse
import logging
import sys

import trio

from agent.config import load_config
from agent.service import run_agent
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
        trio.run(run_agent, config)
    except KeyboardInterrupt:
        log.info("interrupted; stopped")
