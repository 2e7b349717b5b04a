"""ac-grid as a user runs it: up until Ctrl-C, then nothing left behind; a clear word without redis-server."""

import os
import re
import shutil
import signal
import socket
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
        wait_until(lambda: "stopping" in output.read_text(), what="ac-grid stopping")
        grid.send_signal(signal.SIGINT)  # an impatient second Ctrl-C: before, it left processes and files behind
        assert grid.wait(60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
        assert not workdir.exists()
        assert "Traceback" not in output.read_text()
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


def test_a_test_run_stopped_with_sigterm_stops_its_grids(tmp_path):
    """A CI job's time limit sends SIGTERM: the grid's redis-server, controller and agent go with the run."""
    started = tmp_path / "pids"
    (tmp_path / "test_waits.py").write_text(f"""
import time
from pathlib import Path

def test_waits(make_grid):
    grid = make_grid()
    pids = [grid.redis_server.process.pid, *(agent.pid for agent in grid.agents.values()),
            *(controller.pid for controller in grid.controllers)]
    Path({str(started)!r}).write_text(" ".join(map(str, pids)))
    time.sleep(120)
""")
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "acgrid.pytest_plugin", "-p",
                            "no:cacheprovider", str(tmp_path / "test_waits.py")], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(started.exists, what="the grid to start")
        pids = [int(pid) for pid in started.read_text().split()]
        assert len(pids) >= 3 and all(psutil.pid_exists(pid) for pid in pids)
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert "KeyboardInterrupt" in output and "stopped by signal 15" in output, output
    left = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"still running after the run ended: {left}"


def test_a_failed_test_keeps_its_grids_logs_and_the_run_shows_their_ends(tmp_path):
    """A test that fails once on a CI machine must leave more than its assertion: the logs of its grid's
    daemons, kept and shown at the end of the run. A test that passes keeps nothing."""
    (tmp_path / "test_two.py").write_text("""
def test_passes(make_grid):
    assert make_grid().client().cmd(1, 1, "ping", None).get_next_result(30).state == "SUCCESS"

def test_fails(make_grid):
    make_grid().client().cmd(1, 1, "ping", None).get_next_result(30)
    assert False, "failed on purpose"
""")
    kept = tmp_path / "kept"
    finished = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "acgrid.pytest_plugin", "-p",
                               "no:cacheprovider", str(tmp_path / "test_two.py")], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "AC_GRID_LOGS": str(kept)})
    output = finished.stdout
    assert finished.returncode == 1, output
    assert [folder.name for folder in kept.iterdir()] == ["test_two.py_test_fails"], "only the failed test's"
    logs = sorted(path.relative_to(kept / "test_two.py_test_fails").as_posix() for path in kept.rglob("*.log"))
    assert logs == ["grid-0/logs/agent-1-1.log", "grid-0/logs/controller-0.log", "grid-0/redis/redis.log"], logs
    assert "logs of the grids of failed tests" in output
    assert "controller-0.log (last" in output and "routing" in output.lower(), "the logs' last lines are shown"


def test_a_swarm_keeps_its_files_in_memory_where_there_is_room_and_leaves_none(tmp_path, monkeypatch):
    """Thousands of message DBs made on disk were most of a 5 000-agent grid's start (37 s against 16 s):
    a swarm's files go to ``SWARM_FOLDER`` (``/dev/shm``) when it has room, counting the swarms placed there
    before it, else beside the others."""
    from acgrid import launcher

    memory = tmp_path / "memory"
    memory.mkdir()
    monkeypatch.setattr(launcher, "SWARM_FOLDER", memory)
    with launcher.Grid([launcher.AgentSpec(1, 1, swarm=3), launcher.AgentSpec(2, 1)], log_level="WARNING") as grid:
        swarm, single = grid.agent_dir("1:1"), grid.agent_dir("2:1")
        assert swarm.is_relative_to(memory) and (swarm / "swarm" / "1-3").is_dir()  # the third member's files
        assert single.is_relative_to(grid.workdir) and (single / "agent2.toml").is_file()
        workdir = grid.workdir
    assert list(memory.iterdir()) == [] and not workdir.exists()

    monkeypatch.setattr(launcher, "SWARM_BYTES_PER_AGENT", 64 << 20)  # (large: the disk's own writes are noise)
    room = 8 * (64 << 20)  # room for one of the two swarms of 5 below, not for both
    monkeypatch.setattr(launcher, "SWARM_FOLDER_SPARE", shutil.disk_usage(memory).free - room)
    with launcher.Grid([launcher.AgentSpec(1, 1, swarm=5), launcher.AgentSpec(2, 1, swarm=5)],
                       log_level="WARNING") as grid:
        assert grid.agent_dir("1:1").is_relative_to(memory) and grid.agent_dir("2:1").is_relative_to(grid.workdir)
    assert list(memory.iterdir()) == []


def test_ctrl_c_while_it_starts_stops_what_it_started(tmp_path):
    """A bus that takes connections and never answers: the grid cannot start. Ctrl-C (twice) then stops it and
    removes its files, with a line instead of a traceback."""
    silent = socket.create_server(("127.0.0.1", 0))
    output, temporary = tmp_path / "ac-grid.out", tmp_path / "tmp"
    temporary.mkdir()
    with output.open("w") as stdout:
        grid = subprocess.Popen([*AC_GRID, "--agents", "1", "--bus", f"redis://127.0.0.1:{silent.getsockname()[1]}/0"],
                                stdout=stdout, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(temporary)})
    try:
        config = wait_until(lambda: next(temporary.glob("ac-grid-*/controller-0.toml"), None),
                            what="the grid writing its controller's config (then waiting on the silent bus)")
        grid.send_signal(signal.SIGINT)
        grid.send_signal(signal.SIGINT)
        assert grid.wait(60) == 1
        assert not config.parent.exists()
        said = output.read_text()
        assert "ac-grid: interrupted; every process stopped and the files removed" in said and "Traceback" not in said
    finally:
        if grid.poll() is None:
            grid.kill()
            grid.wait()
        silent.close()


def test_a_bus_it_cannot_reach_is_said_in_one_line(tmp_path):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    ran = subprocess.run([*AC_GRID, "--agents", "1", "--bus", f"redis://127.0.0.1:{port}/0"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert ran.stderr.startswith(f"ac-grid: cannot reach the bus at redis://127.0.0.1:{port}/0: "), ran.stderr
    assert list(tmp_path.iterdir()) == [], "its files removed"
