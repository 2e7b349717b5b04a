"""What became of each target of a command, and the summary of a run: counts, agents, the exit status."""

import re
from dataclasses import dataclass, field
from typing import Any

from acclient.cli.parser import Exit
from acclient.cli.render import Agent, elapsed, nodeset
from protocol.states import QUEUED, Phase, State

SUCCEEDED, FAILED, TIMED_OUT, KILLED = "succeeded", "failed", "timed out", "killed"
NOT_ALIVE, LOST, SKIPPED = "not alive", "lost", "skipped"
STILL_RUNNING, NO_REPLY, NO_MATCH = "still running", "no reply", "no match"
#: Always in the summary line, even at 0; the others only when some target is in them.
ALWAYS = (SUCCEEDED, FAILED, NO_REPLY)
#: The order of the summary line.
ORDER = (SUCCEEDED, FAILED, NO_REPLY, STILL_RUNNING, TIMED_OUT, KILLED, NOT_ALIVE, LOST, SKIPPED)
EXIT_OF = {FAILED: Exit.FAILED, TIMED_OUT: Exit.FAILED, KILLED: Exit.FAILED, SKIPPED: Exit.FAILED,
           NOT_ALIVE: Exit.NOT_ALIVE, LOST: Exit.NOT_ALIVE, STILL_RUNNING: Exit.NO_REPLY, NO_REPLY: Exit.NO_REPLY}

_NOT_ALIVE = re.compile(r"agent \d+:\d+ is not alive")
_LOST = re.compile(r"agent \d+:\d+ lost")
_EXITED = re.compile(r"exited with code (\d+)")
_SIGNAL = re.compile(r"ended by signal (\d+)")


def outcome(job: dict[str, Any]) -> str:
    """The category of one target's job (``job`` as ``Job.dump()`` gives it: a phase shows as ``QUEUED``)."""
    state, data, level = job.get("state"), job.get("data") or "", job.get("level") or 0
    if not job.get("nid") and state == State.ERROR:  # the controller's answer for the command: no agent
        return FAILED if data.startswith(("malformed", "internal error", "expired")) else NO_MATCH
    if state == State.SUCCESS:
        return SUCCEEDED
    if state in (State.RUNNING, QUEUED):
        return NO_REPLY if job.get("phase") in (Phase.ROUTED, Phase.PENDING) else STILL_RUNNING
    if state == State.ERROR and not level:
        if _NOT_ALIVE.fullmatch(data):
            return NOT_ALIVE
        if _LOST.fullmatch(data):
            return LOST
    return {State.TIMEOUT.value: TIMED_OUT, State.KILLED.value: KILLED, State.SKIPPED.value: SKIPPED}.get(
        str(state), FAILED)


def is_agent(agent: Agent) -> bool:
    """Whether a result's ``(gid, nid)`` is an agent's (not the controller's answer for a command: nid 0)."""
    return bool(agent[1])


def remote_exit(job: dict[str, Any]) -> int | None:
    """The exit status of the job's process, as a shell gives it (128 + N: ended by signal N), when the job
    says it (``None``: no process ran to an end; from an agent older than ``exitcode``, also when a result
    message hides it)."""
    exitcode = job.get("exitcode")
    if isinstance(exitcode, int) and not isinstance(exitcode, bool):
        return exitcode if exitcode >= 0 else 128 - exitcode
    if job.get("state") == State.SUCCESS:
        return 0
    if job.get("state") != State.ERROR or job.get("level"):
        return None
    data = job.get("data") or ""
    if match := _EXITED.fullmatch(data):
        return int(match.group(1))
    if match := _SIGNAL.fullmatch(data):
        return 128 + int(match.group(1))
    return None


def output_of(job: dict[str, Any]) -> str:
    """What the job printed: its result (a result-level message), else the tail of its stdout."""
    if job.get("level") and job.get("data"):
        return job["data"]
    return (job.get("streams") or ["", ""])[0] or ""


def stderr_of(job: dict[str, Any]) -> str:
    streams = job.get("streams") or ["", ""]
    return streams[1] if len(streams) > 1 and streams[1] else ""


def reason_of(job: dict[str, Any]) -> str:
    """Why a job did not succeed, when its data says so (not when its data is a result)."""
    if job.get("state") == State.SUCCESS or job.get("level"):
        return ""
    if job.get("state") in (State.RUNNING, QUEUED):
        return f"phase {job['phase']}" if job.get("phase") else ""
    return job.get("data") or ""


def record(job: dict[str, Any]) -> dict[str, Any]:
    """A job as ``--json`` and ``--jsonl`` give it: the job, its ``outcome`` and the process's ``rc``."""
    return {**job, "outcome": outcome(job), "rc": remote_exit(job)}


@dataclass
class Summary:
    """The targets of a run by outcome."""

    agents: dict[str, list[Agent]] = field(default_factory=dict)
    refusal: str = ""  # why nothing matched
    seconds: float = 0.0

    @classmethod
    def of(cls, jobs: dict[Agent, dict[str, Any]], seconds: float = 0.0) -> "Summary":
        summary = cls(seconds=seconds)
        for agent, job in sorted(jobs.items()):
            kind = outcome(job)
            if kind == NO_MATCH:
                summary.refusal = job.get("data") or "no agent matched"
                continue
            summary.agents.setdefault(kind, []).append(agent)
        return summary

    @property
    def targeted(self) -> int:
        return sum(len(agents) for agents in self.agents.values())

    def count(self, kind: str) -> int:
        return len(self.agents.get(kind, ()))

    def exit_code(self) -> Exit:
        if not self.targeted:
            return Exit.NO_MATCH if self.refusal else Exit.NO_REPLY
        return max((EXIT_OF.get(kind, Exit.OK) for kind in self.agents), default=Exit.OK)

    def lines(self, timed: bool = True) -> list[str]:
        """``summary: 200 targeted: 180 succeeded, 20 failed, 0 no reply (0.6 s)``, then one line per category
        of trouble naming its agents: ``  failed (20): 1:10,20,30``."""
        took = f" ({elapsed(self.seconds)})" if timed else ""
        if not self.targeted:
            what = f"nothing matched: {self.refusal}" if self.refusal else "nothing answered"
            return [f"summary: {what}{took}"]
        counts = ", ".join(f"{self.count(kind)} {kind}" for kind in ORDER if kind in ALWAYS or self.count(kind))
        lines = [f"summary: {self.targeted} targeted: {counts}{took}"]
        for kind in ORDER:
            if kind != SUCCEEDED and self.count(kind):
                lines.append(f"  {kind} ({self.count(kind)}): {nodeset(self.agents[kind])}")
        return lines

    def dump(self) -> dict[str, Any]:
        return {"targeted": self.targeted, "seconds": round(self.seconds, 3),
                "counts": {kind: self.count(kind) for kind in ORDER},
                "agents": {kind: [f"{g}:{n}" for g, n in agents] for kind, agents in self.agents.items()},
                "nothing_matched": self.refusal or None}
