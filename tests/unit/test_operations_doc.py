"""docs/operations.md: its node config is a valid agent config that keeps its files where systemd lets it."""

import re
from pathlib import Path

from agent.config import load_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_the_node_config_of_the_doc_loads_and_writes_only_to_the_service_directories(tmp_path):
    block = next(block for block in re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.DOTALL)
                 if block.startswith("# /etc/ac/agent2.toml"))
    path = tmp_path / "agent2.toml"
    path.write_text(block)
    config = load_config(path)
    files = [config.message_id_file, config.history_file,
             *(Path(logger.log_dir) for logger in config.loggers if logger.type == "DB")]
    assert all(str(file).startswith(("/var/lib/ac-agent/", "/var/log/ac-agent")) for file in files), files
    assert config.metrics_listen == "0.0.0.0:9101"
