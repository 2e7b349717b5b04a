"""The systemd units in configs/systemd pass systemd-analyze verify, and say what the daemons rely on."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from acdaemon.run import EXIT_CONFIG

UNITS = Path(__file__).resolve().parents[2] / "configs" / "systemd"
SCRIPTS = Path(sys.executable).parent
#: Where docs/operations.md installs the console scripts.
INSTALLED = "/opt/agentcontroller/bin/"
AGENT_UNITS = ["ac-agent.service", "ac-agent@.service"]


def settings(unit: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", (UNITS / unit).read_text(), re.MULTILINE))


@pytest.mark.parametrize("unit", [*AGENT_UNITS, "ac-controller.service"])
def test_unit_verifies(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian: apt-get install systemd)"
    text = (UNITS / unit).read_text()
    assert INSTALLED in text
    text = text.replace(INSTALLED, f"{SCRIPTS}/")  # verify against this install's scripts
    name = unit.replace("@.service", "@test.service")
    (tmp_path / name).write_text(text)
    done = subprocess.run([analyze, "verify", name], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if name in line or "ac-" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


@pytest.mark.parametrize("unit", [*AGENT_UNITS, "ac-controller.service"])
def test_units_match_what_the_daemons_do(unit):
    unit_settings = settings(unit)
    assert unit_settings["Type"] == "notify" and unit_settings["NotifyAccess"] == "main"
    assert unit_settings["WatchdogSec"] and unit_settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit_settings["RestartPreventExitStatus"] == str(EXIT_CONFIG), "a bad config must not restart forever"
    assert unit_settings["NoNewPrivileges"] == "yes" and unit_settings["ProtectSystem"] in ("full", "strict")


@pytest.mark.parametrize("unit", AGENT_UNITS)
def test_agent_units_let_the_agent_stop_its_jobs(unit):
    unit_settings = settings(unit)
    assert unit_settings["KillMode"] == "mixed", "SIGTERM to the agent alone: it stops and reports its jobs itself"
    assert unit_settings["StateDirectory"].startswith("ac-agent") and unit_settings["LogsDirectory"]
    assert "PrivateTmp" not in unit_settings, "jobs share the node's /tmp"
