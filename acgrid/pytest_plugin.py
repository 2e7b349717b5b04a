"""pytest fixtures that run real grids.

Load with ``pytest_plugins = ["acgrid.pytest_plugin"]`` in a ``conftest.py``.

``grid``       one grid per test module: agents 1:1 (roles web, db), 1:2 (web), 2:1 (db).
``make_grid``  start grids of your own inside a test; all are stopped after it.

A run stopped with SIGTERM stops its grids too (``pytest_configure``).

The logs of the grids of a failed test (every daemon's, redis-server's) are kept
in ``$AC_GRID_LOGS`` (default: ``ac-grid-logs`` in the temporary directory), one
folder per test, and the end of the run shows the last lines of each: a test
that fails once on a CI machine is then not a mystery.
"""

import os
import re
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from acgrid.launcher import AgentSpec, Grid

DEFAULT_AGENTS = (AgentSpec(1, 1, ("web", "db")), AgentSpec(1, 2, ("web",)), AgentSpec(2, 1, ("db",)))
#: Lines shown from the end of each kept log, and tests whose logs are shown at the end of a run.
LINES_SHOWN = 40
TESTS_SHOWN = 3

_failed = pytest.StashKey[bool]()  # on a test that failed
_failed_modules = pytest.StashKey[set[str]]()  # on the session: node ids of the modules that had a failed test
_kept_logs = pytest.StashKey[list[Path]]()  # a folder per failed test (or module) whose grid logs were kept


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped with SIGTERM (a CI job's time limit, a supervisor) stops its grids as Ctrl-C does. By
    default the signal ends pytest at once, without the fixtures' teardown, and every grid's redis-server,
    controllers and agents live on; turned into ``KeyboardInterrupt``, it lets pytest tear down first."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Note each test that failed (in its setup or its call), and its module, for the fixtures' teardown."""
    outcome = yield
    if outcome.get_result().failed:  # type: ignore[attr-defined]  # pluggy's result of the wrapped hook
        item.stash[_failed] = True
        item.session.stash.setdefault(_failed_modules, set()).add(item.nodeid.split("::")[0])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    folders = terminalreporter.config.stash.get(_kept_logs, [])
    if not folders:
        return
    terminalreporter.section("logs of the grids of failed tests")
    for folder in folders[:TESTS_SHOWN]:
        for log_file in sorted(folder.rglob("*.log")):
            lines = log_file.read_text(errors="replace").splitlines()[-LINES_SHOWN:]
            terminalreporter.write_line(f"--- {log_file} (last {len(lines)} lines)")
            for line in lines:
                terminalreporter.write_line(line)
    terminalreporter.write_line(f"every log of {len(folders)} failed tests' grids is in {folders[0].parent}")


def _logs_folder(request: pytest.FixtureRequest, failed: bool) -> Path | None:
    """Where to keep the logs of this fixture's grids: a folder of its own if its test (or module) failed."""
    if not failed:
        return None
    root = Path(os.environ.get("AC_GRID_LOGS") or Path(tempfile.gettempdir()) / "ac-grid-logs")
    folder = root / re.sub(r"[^\w.-]+", "_", request.node.nodeid)
    request.config.stash.setdefault(_kept_logs, []).append(folder)
    return folder


@pytest.fixture(scope="module")
def grid(request: pytest.FixtureRequest) -> Iterator[Grid]:
    running = Grid(list(DEFAULT_AGENTS))
    running.start()
    failed = False
    try:
        yield running
        failed = request.node.nodeid in request.session.stash.get(_failed_modules, set())
    finally:
        running.stop(keep_logs_in=_logs_folder(request, failed))


@pytest.fixture
def make_grid(request: pytest.FixtureRequest) -> Iterator[Callable[..., Grid]]:
    grids: list[Grid] = []

    def start(agents: list[AgentSpec] | None = None, **options: Any) -> Grid:
        started = Grid(agents, **options)
        grids.append(started)
        started.start()
        return started

    yield start
    folder = _logs_folder(request, request.node.stash.get(_failed, False)) if grids else None
    for index, started in enumerate(reversed(grids)):
        started.stop(keep_logs_in=folder / f"grid-{index}" if folder else None)
