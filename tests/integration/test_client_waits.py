"""The client's long waits end at their deadline (within ``WAIT_SLACK``) with our ``TimeoutError`` on a bus that
stops answering (its redis-server SIGSTOPped), whatever redis-py's version and its defaults (5.x: no socket
timeout, no retries; 8.x: a 5 s socket timeout and 10 retries with backoff, which made a wait of 8 s last about
59 s; later, ours: the first wait of 2 s ended after 5 s, its reply bounded only by the socket timeout).

The scenario runs in a child interpreter: the project's venv, and (marked slow) throwaway venvs holding the lowest
and the highest redis-py the pins allow, with the checkout on ``PYTHONPATH``."""

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from acclient.cmd import WAIT_SLACK
from acgrid.launcher import AgentSpec

ROOT = Path(__file__).resolve().parents[2]
WAIT = 2.0
#: The first wait on a bus gone silent ends later than its deadline by at most ``WAIT_SLACK`` (the time a wait's
#: reply may be late before it counts as cut off; before it, a whole socket timeout: 5 s), plus slack for a loaded
#: machine. A later wait connects again, and the bus's silence at the handshake costs up to the socket timeout.
FIRST_LATEST = WAIT + WAIT_SLACK + 1.5
LATEST = WAIT + 5.0 + 3.0

SCENARIO = r"""
import json, os, signal, sys, time
import redis
import acclient

url, pid, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
client = acclient.Client.from_url(url)
cmd = client.execute(1, 1, "sleep", ["60"])
cmd.wait_started(timeout=30)
took = {"redis": redis.__version__}
os.kill(pid, signal.SIGSTOP)
try:
    started = time.monotonic()
    try:
        cmd.get_next_result(wait)
        took["get_next_result"] = "returned"
    except TimeoutError as exc:  # ours: the builtin one (redis-py's is not a subclass of it)
        took["get_next_result"] = [type(exc).__module__, round(time.monotonic() - started, 2)]
    started = time.monotonic()
    results = list(cmd.iter_results(timeout=wait))
    took["iter_results"] = [len(results), round(time.monotonic() - started, 2)]
    started = time.monotonic()
    try:
        results = list(client.iter_results([cmd], timeout=wait))
        took["Client.iter_results"] = [len(results), round(time.monotonic() - started, 2)]
    except Exception as exc:
        took["Client.iter_results"] = [repr(exc), round(time.monotonic() - started, 2)]
finally:
    os.kill(pid, signal.SIGCONT)
cmd.kill()
print(json.dumps(took))
"""


@pytest.fixture(scope="module")
def quiet_grid():
    from acgrid.launcher import Grid

    with Grid([AgentSpec(1, 1)]) as grid:
        yield grid


def run_scenario(python: str, grid, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([python, "-c", SCENARIO, grid.bus_url, str(grid.redis_server.process.pid), str(WAIT)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def check(took: dict) -> None:
    module, seconds = took["get_next_result"]
    assert module == "builtins", f"redis-py's own TimeoutError leaked out: {took}"
    assert WAIT - 0.1 <= seconds <= FIRST_LATEST, took
    for wait in ("iter_results", "Client.iter_results"):
        count, seconds = took[wait]
        assert count == 0 and WAIT - 0.1 <= seconds <= LATEST, took


def test_waits_end_at_their_deadline_on_a_silent_bus(quiet_grid):
    took = run_scenario(sys.executable, quiet_grid)
    print(f"redis-py {took['redis']}: get_next_result({WAIT:g}) raised TimeoutError after "
          f"{took['get_next_result'][1]} s, iter_results(timeout={WAIT:g}) ended after {took['iter_results'][1]} s")
    check(took)


@pytest.mark.slow
@pytest.mark.parametrize("requirement", ["redis==5.0.*", "redis"], ids=["lowest", "newest"])
def test_waits_end_at_their_deadline_with_the_lowest_and_newest_redis_py(quiet_grid, tmp_path, requirement):
    folder = tmp_path / "venv"
    venv.create(folder, with_pip=True)
    python = str(folder / "bin" / "python")
    installed = subprocess.run([python, "-m", "pip", "install", "-q", requirement], capture_output=True, text=True,
                               timeout=300)
    if installed.returncode != 0:
        pytest.skip(f"pip could not install {requirement} here: {installed.stderr.strip()[-300:]}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VIRTUAL_ENV", None)
    took = run_scenario(python, quiet_grid, env)
    print(f"redis-py {took['redis']}: get_next_result({WAIT:g}) raised TimeoutError after "
          f"{took['get_next_result'][1]} s, iter_results(timeout={WAIT:g}) ended after {took['iter_results'][1]} s")
    check(took)
