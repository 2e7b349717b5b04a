"""Job states, spelled exactly as the 2015 wire spells them, and the phases of an unfinished job.

A job that has not ended is ``RUNNING`` on the wire, whatever it is doing:
the 2015 client's ``Job`` re-reads itself only while its state is ``null`` or
``RUNNING``, so any other state there would freeze it. What an unfinished
job is really doing is its ``phase``, an extra field of the job JSON that the
2015 client ignores and ours shows as ``QUEUED``.
"""

from enum import StrEnum


class State(StrEnum):
    """The states of a job on the wire; the final ones are in ``FINAL_STATES``."""

    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    KILLED = "KILLED"
    UNKNOWN_CMD = "UNKNOWN_CMD"
    DUPLICATE_ID = "DUPLICATE_ID"
    SKIPPED = "SKIPPED"  # a rollout target that was never started


#: States after which a job run produces nothing more.
FINAL_STATES = frozenset(
    {State.SUCCESS, State.ERROR, State.TIMEOUT, State.KILLED, State.UNKNOWN_CMD, State.DUPLICATE_ID, State.SKIPPED}
)


class Phase(StrEnum):
    """What a ``RUNNING`` job waits for, when it is not running yet (no phase: its process runs)."""

    PENDING = "pending"  # a rollout target: it waits for its wave, and goes to its agent then
    ROUTED = "routed"  # the controller sent it to the agent, which has not taken it up yet
    WAITING = "waiting"  # the agent holds it: it waits for a max_jobs slot or its turn in a serial queue


#: How our client, CLI and docs name the state of a job in any phase: not started yet.
QUEUED = "QUEUED"
