"""Job states, spelled exactly as the 2015 wire spells them."""

from enum import StrEnum


class State(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    KILLED = "KILLED"
    UNKNOWN_CMD = "UNKNOWN_CMD"
    DUPLICATE_ID = "DUPLICATE_ID"


#: States after which a job run produces nothing more.
FINAL_STATES = frozenset(
    {State.SUCCESS, State.ERROR, State.TIMEOUT, State.KILLED, State.UNKNOWN_CMD, State.DUPLICATE_ID}
)
