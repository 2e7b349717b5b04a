"""The example configs in configs/ are complete and valid."""

import re
from pathlib import Path

from acdaemon.config import METRICS_SCHEMA, SECURITY_SCHEMA
from acgrid import main as grid_main
from agent import config as agent_config
from agent.config import load_config as load_agent_config
from controller import config as controller_config
from controller.config import load_config as load_controller_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_example_agent_config_loads_and_names_every_section():
    config = load_agent_config(CONFIGS / "agent2.toml")
    assert (config.gid, config.nid) == (1, 1)
    runners = {name: config.extensions[name] for name in ("jumpscript", "execute_js_py")}  # 2015 and usage page
    assert {(ext.binary, ext.cwd, ext.args) for ext in runners.values()} == \
        {("ac-jumpscript", str(CONFIGS / "scripts"), ("{domain}", "{name}"))}
    assert {logger.type for logger in config.loggers} == {"DB", "AC", "console"}
    assert [job.id for job in config.startup] == ["hello"]


def test_example_controller_config_loads():
    config = load_controller_config(CONFIGS / "controller.toml")
    assert config.bus.url == "redis://127.0.0.1:6379/0"
    assert config.result_ttl == 86400


def documented_keys(path: Path) -> set[str]:
    return set(re.findall(r"^\s*#?\s*(\w+)\s*=", path.read_text(), re.MULTILINE))


def test_every_agent_key_is_in_the_example():
    schemas = [agent_config.MAIN_SCHEMA, agent_config.CONTROLLER_SCHEMA, agent_config.CHANNEL_SCHEMA,
               agent_config.EXTENSION_SCHEMA, agent_config.STATS_SCHEMA, agent_config.STARTUP_SCHEMA,
               SECURITY_SCHEMA, METRICS_SCHEMA, *agent_config.LOGGER_SCHEMAS.values()]
    missing = {key for schema in schemas for key in schema} - {"security"} - documented_keys(CONFIGS / "agent2.toml")
    assert not missing


def test_every_controller_key_is_in_the_example():
    schemas = [controller_config.BUS_SCHEMA, controller_config.RESULTS_SCHEMA, controller_config.ROUTING_SCHEMA,
               controller_config.AGENTS_SCHEMA, controller_config.EVENTS_SCHEMA, SECURITY_SCHEMA, METRICS_SCHEMA]
    missing = {key for schema in schemas for key in schema} - {"security"}
    assert not missing - documented_keys(CONFIGS / "controller.toml")


def test_example_grid_config_loads_and_names_every_key():
    grid = grid_main._grid_from(grid_main.argparse.Namespace(config=str(CONFIGS / "grid.toml"), controllers=None,
                                                             bus=None, log_level="INFO", tls=False, acl=False,
                                                             sentinel=False))
    assert [(spec.name, spec.roles, spec.swarm) for spec in grid.agent_specs.values()] == [
        ("1:1", ("web", "db"), 1), ("1:2", ("web",), 1), ("2:1", ("swarm",), 100)]
    assert grid.agent_specs["1:2"].config == {**grid_main.TRIAL_LOGGING, "main": {"max_jobs": 10}}, \
        "its own config over the loggers a trial grid's agents carry"
    keys = {*grid_main.GRID_SCHEMA, *grid_main.AGENT_SCHEMA}
    assert not keys - documented_keys(CONFIGS / "grid.toml")
