"""ac-grid as a user runs it: up until Ctrl-C, then nothing left behind; a clear word without redis-server."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from support import wait_until

AC_GRID = [sys.executable, "-c", "from acgrid.main import main; main()"]


def test_ctrl_c_stops_every_process_and_removes_the_files(tmp_path):
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    output = tmp_path / "ac-grid.out"  # a file, as through a pipe: ac-grid must not hold its lines back
    with output.open("w") as stdout:
        grid = subprocess.Popen([*AC_GRID, "--agents", "2"], stdout=stdout, stderr=subprocess.STDOUT, env=environment)
    try:
        wait_until(lambda: "press Ctrl-C" in output.read_text() or grid.poll() is not None, what="ac-grid up")
        workdir = Path(re.search(r"files in (\S+)", output.read_text()).group(1))
        children = psutil.Process(grid.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert workdir.is_dir()
        assert "redis-server" in names and names.count("-m agent") == 2 and "-m controller" in names

        grid.send_signal(signal.SIGINT)
        assert grid.wait(60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
        assert not workdir.exists()
        assert "stopping" in output.read_text()
    finally:
        if grid.poll() is None:
            grid.kill()
            grid.wait()


def test_without_redis_server_it_says_how_to_install_it(tmp_path):
    empty, temporary = tmp_path / "bin", tmp_path / "tmp"
    empty.mkdir()
    temporary.mkdir()
    environment = {**os.environ, "PATH": str(empty), "TMPDIR": str(temporary)}  # no redis-server on PATH
    finished = subprocess.run(AC_GRID, capture_output=True, text=True, env=environment, timeout=60)
    assert finished.returncode == 1
    assert "redis-server not found on PATH: install it (Debian: apt-get install -y redis-server)" in finished.stderr
    assert list(temporary.iterdir()) == []  # the grid's folder is gone too
