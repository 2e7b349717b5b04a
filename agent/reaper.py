"""No process a job starts outlives the job, even one that left its process group.

Each job runs in a process group of its own, which holds most of what it
starts (``agent/process.py`` signals the group). A process can leave the
group (``setsid``, the daemon's double fork); two more things still find it:

* **The agent is its jobs' child subreaper** (``PR_SET_CHILD_SUBREAPER``): a
  process whose parent exits is re-parented to the agent instead of to init,
  so every orphan of a job shows up among the agent's own children, and the
  agent reaps it when it exits (on ``SIGCHLD``).
* **Every process a job starts inherits the job's identity** in its
  environment: ``AGENT_JOBID`` with the agent's ``AGENT_GID``, ``AGENT_NID``
  and ``AGENT_HOME``.

Once a job's main process has exited and its group is empty, the agent stops
(TERM, then KILL after the grace period) every process it adopted that carries
that job's id, with their descendants. When the agent starts, it stops every
process on the host that carries its own identity: what a previous run of it,
killed, left behind. A process that both left the group and dropped its
environment is out of reach here; under systemd the unit's cgroup
(``KillMode=mixed``) still takes it when the agent stops or dies. Per-job
cgroups are not used: they need a delegated cgroup tree, which the agent
cannot count on.
"""

import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from agent.launch import Identity

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
#: How often to look whether stopped processes are gone (only while stopping some).
_POLL = 0.05
#: Looks at an adopted process whose environment reads empty (as it does for a moment while it execs).
_LOOKS = 5


def carries(environment: dict[bytes, bytes], identity: "Identity", job_id: str | None = None) -> bool:
    """Whether a process's environment says it belongs to a job of ``identity`` (to job ``job_id``, if given)."""
    job = environment.get(b"AGENT_JOBID")
    return (job is not None and (job_id is None or job == os.fsencode(job_id))
            and environment.get(b"AGENT_GID") == str(identity.gid).encode()
            and environment.get(b"AGENT_NID") == str(identity.nid).encode()
            and environment.get(b"AGENT_HOME") == os.fsencode(identity.home))


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants; False where the kernel does not allow it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Reaper:
    """Reaps the processes the agent adopted, and stops those a job left behind. One per process (the
    identities of a swarm share it).

    ``managed`` holds the pids of the jobs' main processes: ``agent/process.py``
    waits for those itself, so the reaper never touches them.
    """

    def __init__(self) -> None:
        self.managed: set[int] = set()
        self.subreaper = False
        self.strays_stopped = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Be the subreaper and reap adopted processes as they exit, until cancelled."""
        with trio.open_signal_receiver(signal.SIGCHLD) as exits:
            self.subreaper = become_subreaper()
            if not self.subreaper:
                log.warning("cannot become the child subreaper of the jobs: a process that leaves its job's process "
                            "group is found by its AGENT_JOBID alone while its parent lives")
            task_status.started()
            async for _ in exits:
                self.reap()

    def reap(self) -> None:
        """Collect the exit of every adopted process that has exited."""
        for pid in _children() - self.managed:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)

    async def stop_strays(self, identity: "Identity", job_id: str, grace: float) -> int:
        """Stop what job ``job_id`` of ``identity`` left running outside its group (its main process has
        exited); return how many processes that was."""
        adopted, unsure = [], list(_children() - self.managed)
        for _ in range(_LOOKS):
            environments = {pid: _environment(pid) for pid in unsure}
            adopted += [pid for pid, environment in environments.items() if carries(environment, identity, job_id)]
            unsure = [pid for pid, environment in environments.items() if not environment and _alive(pid)]
            if not unsure:
                break
            await trio.sleep(_POLL)  # an empty environment: a process in the middle of an exec, most likely
        if not adopted:
            return 0
        strays = _with_descendants(adopted)
        await _stop(strays, grace, self.reap)
        self.strays_stopped += len(strays)
        log.info("job %s: stopped %d processes it left running outside its process group", job_id, len(strays))
        return len(strays)


async def stop_leftovers(identity: "Identity", grace: float) -> int:
    """Stop every process of this agent's jobs still running from a previous run of the agent; return how many."""
    leftovers = await trio.to_thread.run_sync(_processes_of, identity)
    if leftovers:
        await _stop(leftovers, grace, lambda: None)
    return len(leftovers)


def _processes_of(identity: "Identity") -> list[int]:
    me = os.getpid()
    return [pid for pid in _all_pids() if pid != me and carries(_environment(pid), identity)]


async def _stop(pids: list[int], grace: float, reap: Callable[[], None]) -> None:
    """TERM ``pids``, KILL those still there after ``grace`` seconds, and wait (up to ``grace``) until all are gone."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        with trio.move_on_after(grace):
            while True:
                reap()
                pids = [pid for pid in pids if _alive(pid)]
                if not pids:
                    return
                await trio.sleep(_POLL)


def _all_pids() -> Iterable[int]:
    return (int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit())


def _children(pid: int | str = "self") -> set[int]:
    """The direct children of a process (of each of its threads)."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as listing:
                found.update(int(child) for child in listing.read().split())
        except OSError:
            continue
    return found


def _with_descendants(roots: list[int]) -> list[int]:
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo.extend(_children(pid))
    return found


def _environment(pid: int) -> dict[bytes, bytes]:
    """The environment a process started with; empty if it cannot be read (gone, another user's)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            raw = environ.read()
    except OSError:
        return {}
    return dict(entry.partition(b"=")[::2] for entry in raw.split(b"\0") if entry)


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")
