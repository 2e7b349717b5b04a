"""The systemd units in configs/systemd pass systemd-analyze verify."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "configs" / "systemd"
SCRIPTS = Path(sys.executable).parent


@pytest.mark.parametrize("unit", ["ac-agent.service", "ac-agent@.service", "ac-controller.service"])
def test_unit_verifies(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian: apt-get install systemd)"
    text = (UNITS / unit).read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "NoNewPrivileges=yes" in text
    # The units name the scripts where `pip install` puts them system-wide; verify with this install's.
    text = text.replace("/usr/local/bin/", f"{SCRIPTS}/")
    name = unit.replace("@.service", "@test.service")
    (tmp_path / name).write_text(text)
    done = subprocess.run([analyze, "verify", name], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if name in line or "ac-" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr
