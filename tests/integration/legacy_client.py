"""The real 2015 client, ported to Python 3 at run time, and what a test needs to drive it safely.

``load()`` reads ``acclient_2015.py`` (the client published in 2015, Python 2 source) from
``../shared/legacy`` beside the repository, converts it with the standard library's mechanical
``lib2to3`` fixers, and executes the result into a fresh module object. Nothing of the client is
kept in this repository: it is read from where it was published, every run.

The 2015 client waits forever in some calls (``get_msgs``, ``iter_results``; ``get_next_result``
with its default timeout 0); ``bounded`` runs such a call with a deadline, so a test fails instead
of hanging. The 2015 ``Job`` is only observable by reading its properties again (it re-reads the
command's ``jobresult`` hash while its state is ``null`` or ``RUNNING``): ``watch_state`` polls it.
"""

import threading
import time
import types
import warnings
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from support import TIMEOUT

REPO = Path(__file__).resolve().parents[2]
#: Where the 2015 client is published in this setup: ../shared/legacy relative to the repository root.
LEGACY_CLIENT = REPO.parent / "shared" / "legacy" / "acclient_2015.py"

#: Seconds any one call of the 2015 client may take before the test fails.
CALL_TIMEOUT = 60.0
#: Seconds a job may take to reach the state a test waits for.
STATE_TIMEOUT = TIMEOUT
#: Seconds between two reads of a 2015 ``Job``'s state, and between two looks of ``wait_until`` at what the
#: 2015 client shows.
POLL_INTERVAL = 0.1


def port(source: str, filename: str) -> str:
    """``source`` (Python 2) converted to Python 3 by every fixer of ``lib2to3.fixes``, nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        from lib2to3 import refactor

        tool = refactor.RefactoringTool(refactor.get_fixers_from_package("lib2to3.fixes"))
        tree = tool.refactor_string(source if source.endswith("\n") else source + "\n", filename)
    return str(tree)


def load(path: Path = LEGACY_CLIENT) -> types.ModuleType:
    """The 2015 client as a fresh module (not entered in ``sys.modules``)."""
    code = compile(port(path.read_text(), str(path)), str(path), "exec")
    module = types.ModuleType("acclient_2015", "The 2015 agentcontroller2 client, ported to Python 3 at run time")
    module.__file__ = str(path)
    exec(code, module.__dict__)
    return module


def bounded(function: Callable[..., Any], *args: Any, timeout: float = CALL_TIMEOUT, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, failing the test if it has not returned within ``timeout`` s.

    The call runs in a daemon thread: one that never returns is left blocked on the bus (which the
    grid stops after the module) and the test fails with an AssertionError naming the call.
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def call() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    name = getattr(function, "__qualname__", repr(function))
    threading.Thread(target=call, name=f"2015 client: {name}", daemon=True).start()
    if not done.wait(timeout):
        raise AssertionError(f"2015 client call {name}{args!r} did not return within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def take_job(cmd: Any, agent: tuple[int, int], timeout: float = STATE_TIMEOUT) -> Any:
    """The 2015 ``Job`` of ``cmd`` on ``agent`` from ``cmd.get_jobs()``, as soon as the controller has
    written one (its placeholder, once the command is routed). Asked again at once: the agent may
    update the placeholder within milliseconds, and a test wants the Job as the controller wrote it."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = cmd.get_jobs()
        if agent in jobs:
            return jobs[agent]
        if time.monotonic() > deadline:
            raise AssertionError(f"command {cmd.id} has no job on {agent} within {timeout:g} s: {sorted(jobs)}")
        time.sleep(0.0005)


def watch_state(job: Any, wanted: Collection[str], timeout: float = STATE_TIMEOUT) -> list[str]:
    """Read ``job.state`` every ``POLL_INTERVAL`` until it is one of ``wanted``; return every state seen,
    in order (repeats left out). Fails, naming what it saw, if ``wanted`` does not come in time."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        state = job.state
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in wanted:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job.id} on {job.gid}:{job.nid}: its state went {' -> '.join(map(str, seen))} "
                                 f"and was not {'/'.join(sorted(wanted))} within {timeout:g} s")
        time.sleep(POLL_INTERVAL)
