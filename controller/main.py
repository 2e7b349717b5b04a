"""``ac-controller``: the command line of the controller daemon."""

import argparse
import logging
import sys

import trio

from controller.config import load_config
from controller.service import run_controller
from daemon.config import ConfigError
from daemon.logs import setup_logging

log = logging.getLogger("controller")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ac-controller", description="Route commands from clients to agents.")
    parser.add_argument("-c", "--config", help="controller.toml (default: built-in defaults)")
    parser.add_argument("--bus", help="bus URL, e.g. redis://127.0.0.1:6379/0 (overrides [bus] url)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    options = parser.parse_args(argv)
    setup_logging(options.log_level)
    try:
        config = load_config(options.config, options.bus)
    except (ConfigError, ValueError) as exc:
        sys.exit(f"ac-controller: {exc}")
    try:
        trio.run(run_controller, config)
    except KeyboardInterrupt:
        log.info("interrupted; stopped")
