"""What the client raises, besides ``TimeoutError`` and ``ValueError``."""

from typing import Any


class JobError(RuntimeError):
    """A command the client waited on ended in another state than ``SUCCESS``.

    ``job`` is the job as the agent (or the controller) reported it.
    """

    def __init__(self, job: Any) -> None:
        super().__init__(f"{job.cmd or 'command'} {job.id} on agent {job.gid}:{job.nid} ended {job.state}: {job.data}")
        self.job = job


class NoTargetError(ValueError):
    """The command has no single agent to ask (it went by role or fanned out)."""
