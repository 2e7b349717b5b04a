"""The wheel carries the completions and the man page generated from the parser at build time; in a checkout
(an editable install) ``ac completion`` and ``ac manpage`` make them when asked."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from cli_support import ac

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                                    ".hypothesis", "logs", "message.id", "history.db*")
SUBCOMMANDS = ("agents", "exec", "wait", "jobs", "job", "logs", "kill", "info", "doctor", "completion", "manpage")


def test_the_wheel_carries_completions_and_man_page_made_from_the_parser(tmp_path):
    source = tmp_path / "source"  # a copy: building in the work tree would leave build/ there
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "dist").glob("agentcontroller-*.whl")
    with zipfile.ZipFile(wheel) as contents:
        files = {name: contents.read(name).decode() for name in contents.namelist()
                 if name.startswith("acclient/cli/share/")}
    assert set(files) == {f"acclient/cli/share/{name}" for name in ("ac.bash", "ac.zsh", "ac.tcsh", "ac.1")}
    for name, text in files.items():
        assert all(word in text for word in SUBCOMMANDS), name
    assert "agentcontroller 0.1.0" in files["acclient/cli/share/ac.1"]


def test_a_checkout_makes_them_when_asked():
    bash = ac(None, "completion", "bash")
    assert bash.code == 0 and "_shtab_ac_subparsers=(agents exec wait" in bash.out
    page = ac(None, "manpage")
    assert page.code == 0 and page.out.startswith(".TH AC")
