"""``ac-controller``: the command line of the controller daemon."""

import argparse
import logging
from functools import partial

from controller.config import load_config
from controller.service import run_controller
from daemon.config import ConfigError
from daemon.logs import LEVELS, setup_logging
from daemon.run import refuse, run_daemon

log = logging.getLogger("controller")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ac-controller", description="Route commands from clients to agents.")
    parser.add_argument("-c", "--config", help="controller.toml (default: built-in defaults)")
    parser.add_argument("--bus", help="bus URL, e.g. redis://127.0.0.1:6379/0 (overrides [bus] url)")
    parser.add_argument("--log-level", default="INFO", choices=LEVELS)
    parser.add_argument("--check", action="store_true", help="check the config and exit (status 0 if usable)")
    options = parser.parse_args(argv)
    setup_logging(options.log_level)
    try:
        config = load_config(options.config, options.bus)
    except (ConfigError, ValueError) as exc:
        refuse("ac-controller", exc)
    if options.check:
        print(f"{options.config or 'defaults'}: ok (bus {config.bus.url}, metrics "
              f"{config.metrics_listen or 'off'})")
        return
    try:
        run_daemon("ac-controller", run_controller, config, partial(load_config, options.config, options.bus))
    except KeyboardInterrupt:
        log.info("interrupted; stopped")
