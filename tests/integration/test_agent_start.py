"""``ac-agent`` refuses to start, with one clear line, when its config or its files are unusable."""

import subprocess
import sys

CONFIG = """
[main]
gid = 1
nid = 1
{extra}
[controllers.main]
url = "redis://127.0.0.1:1/0"
"""


def start(tmp_path, extra):
    path = tmp_path / "agent2.toml"
    path.write_text(CONFIG.format(extra=extra))
    done = subprocess.run([sys.executable, "-m", "agent", "-c", str(path)], capture_output=True, text=True,
                          timeout=60)
    return path, done


def test_a_bad_config_stops_the_agent_naming_file_section_and_key(tmp_path):
    path, done = start(tmp_path, "max_jobs = 0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"ac-agent: {path} [main] max_jobs: must be greater than 0, got 0"


def test_files_that_cannot_be_written_stop_the_agent_at_start(tmp_path):
    _, done = start(tmp_path, 'message_id_file = "/proc/no-such-folder/message.id"')
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ac-agent: cannot open the agent's files:") and "/proc/no-such-folder" in last
