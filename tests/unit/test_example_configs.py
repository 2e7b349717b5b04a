"""The example configs in configs/ are complete and valid."""

from pathlib import Path

from agent.config import load_config as load_agent_config
from controller.config import load_config as load_controller_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_example_agent_config_loads_and_names_every_section():
    config = load_agent_config(CONFIGS / "agent2.toml")
    assert (config.gid, config.nid) == (1, 1)
    assert config.extensions["execute_js_py"].binary == "ac-jumpscript"
    assert {logger.type for logger in config.loggers} == {"DB", "AC", "console"}
    assert [job.id for job in config.startup] == ["hello"]


def test_example_controller_config_loads():
    config = load_controller_config(CONFIGS / "controller.toml")
    assert config.bus.url == "redis://127.0.0.1:6379/0"
    assert config.result_ttl == 86400
