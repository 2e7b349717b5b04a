"""pytest fixtures that run real grids.

Load with ``pytest_plugins = ["acgrid.pytest_plugin"]`` in a ``conftest.py``.

``grid``       one grid per test module: agents 1:1 (roles web, db), 1:2 (web), 2:1 (db).
``make_grid``  start grids of your own inside a test; all are stopped after it.

A run stopped with SIGTERM stops its grids too (``pytest_configure``).
"""

import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest

from acgrid.launcher import AgentSpec, Grid

DEFAULT_AGENTS = (AgentSpec(1, 1, ("web", "db")), AgentSpec(1, 2, ("web",)), AgentSpec(2, 1, ("db",)))


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped with SIGTERM (a CI job's time limit, a supervisor) stops its grids as Ctrl-C does. By
    default the signal ends pytest at once, without the fixtures' teardown, and every grid's redis-server,
    controllers and agents live on; turned into ``KeyboardInterrupt``, it lets pytest tear down first."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


@pytest.fixture(scope="module")
def grid() -> Iterator[Grid]:
    with Grid(list(DEFAULT_AGENTS)) as running:
        yield running


@pytest.fixture
def make_grid() -> Iterator[Callable[..., Grid]]:
    grids: list[Grid] = []

    def start(agents: list[AgentSpec] | None = None, **options: Any) -> Grid:
        started = Grid(agents, **options)
        grids.append(started)
        started.start()
        return started

    yield start
    for started in reversed(grids):
        started.stop()
