"""``pip install`` of the wheel gives console scripts that work outside the repository."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                                    ".hypothesis", "logs", "message.id", "history.db*")


def run(*argv: object, **options) -> subprocess.CompletedProcess:
    done = subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, timeout=180, **options)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_wheel_installs_into_a_fresh_venv_and_its_scripts_run_anywhere(tmp_path):
    source = tmp_path / "source"  # a copy: building in the work tree would leave build/ there
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", source)
    wheel, = (tmp_path / "dist").glob("agentcontroller-*.whl")
    contents = zipfile.ZipFile(wheel).namelist()
    assert "controller/scripts/route.lua" in contents and "acgrid/launcher.py" in contents
    tops = {name.split("/")[0] for name in contents if "/" in name and ".dist-info" not in name}
    assert tops == {"acbus", "acclient", "acdaemon", "acgrid", "agent", "controller", "extensions", "protocol"}
    assert not [name for name in contents if name.startswith(("tests/", "bench/", "dev/"))]

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    # beside python-daemon, whose import name is "daemon": our support code uses names of its own
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", wheel, "python-daemon")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    where = run(venv / "bin" / "python", "-c", "import agent, controller, acdaemon, daemon; "
                "assert hasattr(daemon, 'DaemonContext'); print(controller.__file__)", cwd=elsewhere, env=env)
    assert where.stdout.startswith(str(venv)), "imported from the venv, not from the repository"
    demo = run(venv / "bin" / "ac-grid", "--demo", cwd=elsewhere, env=env)
    assert "state SUCCESS" in demo.stdout and "ping every agent" in demo.stdout, demo.stdout
    shutil.copytree(ROOT / "configs", elsewhere / "configs", ignore=NOT_SOURCE)
    check = run(venv / "bin" / "ac-agent", "--check", "-c", elsewhere / "configs" / "agent2.toml", cwd=elsewhere,
                env=env)
    assert "ok" in check.stdout and "warning" not in check.stdout, "ac-jumpscript is on PATH"
    run(venv / "bin" / "ac-controller", "--check", "-c", elsewhere / "configs" / "controller.toml", env=env)
    assert "usage: ac " in run(venv / "bin" / "ac", "--help", env=env).stdout
