"""What the client raises, besides ``TimeoutError`` and ``ValueError``."""

from typing import Any


class JobError(RuntimeError):
    """A command the client waited on ended in another state than ``SUCCESS``.

    ``job`` is the job as the agent (or the controller) reported it.
    """

    def __init__(self, job: Any) -> None:
        super().__init__(f"{job.cmd or 'command'} {job.id} on agent {job.gid}:{job.nid} ended {job.state}: {job.data}")
        self.job = job


class CommandLost(RuntimeError):
    """The bus lost the command before it was answered: Redis restarted without persistence (or was flushed)
    while the command waited to be routed or to be taken by its agent, or (``failover``) a Sentinel failover
    promoted a replica that had not received it yet. It may not have run; send it again if that is safe."""

    def __init__(self, command_id: str, failover: bool = False) -> None:
        why = ("a failover of the bus promoted a replica that had not received it (Redis replicates "
               "asynchronously: wait_replicas closes that gap)") if failover else \
            "the bus lost its data (Redis restarted without persistence, or was flushed)"
        super().__init__(f"command {command_id} was lost: {why} before the command was answered; it may not "
                         "have run")
        self.command_id = command_id
        self.failover = failover


class NoControllerError(RuntimeError):
    """No controller is alive on the bus, so the command waits in ``cmds_queue`` unrouted: until one starts,
    or until it is too old to be routed (``route_ttl``, its ``ttl``) and is answered ``ERROR``."""

    def __init__(self, command_id: str) -> None:
        super().__init__(f"no controller is alive on the bus: command {command_id} waits in cmds_queue until one "
                         "starts (and is answered ERROR, expired, if that takes longer than its ttl or the "
                         "controller's route_ttl)")
        self.command_id = command_id


class NoTargetError(ValueError):
    """The command has no single agent to ask (it went by role or fanned out)."""
