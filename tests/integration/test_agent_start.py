"""``ac-agent`` refuses to start, with one clear line, when its config or its files are unusable."""

import subprocess
import sys

from acdaemon.run import EXIT_CONFIG
from acgrid.launcher import AgentSpec

CONFIG = """
[main]
gid = 1
nid = 1
{extra}
[controllers.main]
url = "redis://127.0.0.1:1/0"
"""


def start(tmp_path, extra, *options):
    path = tmp_path / "agent2.toml"
    path.write_text(CONFIG.format(extra=extra))
    done = subprocess.run([sys.executable, "-m", "agent", "-c", str(path), *options], capture_output=True,
                          text=True, timeout=60)
    return path, done


def test_a_bad_config_stops_the_agent_naming_file_section_and_key(tmp_path):
    path, done = start(tmp_path, "max_jobs = 0")
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.strip().splitlines()[-1] == f"ac-agent: {path} [main] max_jobs: must be greater than 0, got 0"


def test_files_that_cannot_be_written_stop_the_agent_at_start(tmp_path):
    _, done = start(tmp_path, 'message_id_file = "/proc/no-such-folder/message.id"')
    assert done.returncode == EXIT_CONFIG
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ac-agent: cannot open the agent's files:") and "/proc/no-such-folder" in last


def test_check_validates_a_config_without_starting(tmp_path):
    extension = '[extensions.deploy]\nbinary = "no-such-deploy-tool"\n[metrics]\nlisten = "127.0.0.1:9100"'
    path, done = start(tmp_path, f'roles = ["web"]\n{extension}', "--check")
    assert done.returncode == 0, done.stderr
    report = done.stdout
    assert report.startswith(f"{path}: ok") and "agent 1:1, roles web" in report
    assert "main (redis://127.0.0.1:1/0)" in report and "metrics: 127.0.0.1:9100" in report
    assert "[extensions.deploy] binary 'no-such-deploy-tool' cannot be run from here" in report
    assert not (tmp_path / "message.id").exists() and not (tmp_path / "logs").exists(), "nothing was started"

    _, done = start(tmp_path, '[metrics]\nlisten = "9100"', "--check")
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.strip() == f"ac-agent: {path} [metrics] listen: expected host:port, e.g. 127.0.0.1:9100 " \
                                  "(port 0: any free port), got '9100'"


def test_controller_check_validates_a_config(tmp_path):
    path = tmp_path / "controller.toml"
    path.write_text('[routing]\nbatch_size = 5000\n')
    done = subprocess.run([sys.executable, "-m", "controller", "-c", str(path), "--check"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.strip() == f"ac-controller: {path} [routing] batch_size: must be 1 to 1000, got 5000"
    path.write_text('[metrics]\nlisten = "[::1]:0"\n')
    done = subprocess.run([sys.executable, "-m", "controller", "-c", str(path), "--check"], capture_output=True,
                          text=True, timeout=60)
    first, *rest = done.stdout.splitlines()
    assert done.returncode == 0 and first == f"{path}: ok (bus redis://127.0.0.1:6379/0, metrics [::1]:0)"
    assert all(line.startswith("warning: ") for line in rest), rest  # about that bus, if any answers there


def test_controller_check_warns_of_a_bus_without_persistence(make_grid, tmp_path):
    grid = make_grid([AgentSpec(1, 1)])
    path = tmp_path / "controller.toml"
    path.write_text(f'[bus]\nurl = "{grid.bus_url}"\n')

    def check() -> list[str]:
        done = subprocess.run([sys.executable, "-m", "controller", "-c", str(path), "--check"], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[1:]

    assert check() == [], "the grid's bus keeps an append-only file and never evicts"
    grid.redis.config_set("appendonly", "no")
    grid.redis.config_set("maxmemory-policy", "allkeys-lru")
    warnings = check()
    assert len(warnings) == 2 and "no persistence at all" in warnings[0] and "appendonly yes" in warnings[0]
    assert "maxmemory-policy allkeys-lru" in warnings[1] and "noeviction" in warnings[1]
