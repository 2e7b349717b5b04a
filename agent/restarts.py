"""``max_restart``: when a failed run is started again.

A run that ends ``ERROR`` or ``TIMEOUT`` after living less than
``STABLE_AFTER`` seconds is restarted, at most ``max_restart`` times in a
row (so N restarts make N+1 runs). A run that lived ``STABLE_AFTER`` seconds
or more proved the job can run: the count starts again from zero (and the
run, if it failed, is restarted). A kill is never followed by a restart.
"""

from protocol.states import State

#: Seconds a run must live for its job to count as stable (the 2015 agent's 5 minutes).
STABLE_AFTER = 300.0

RESTARTABLE = frozenset({State.ERROR, State.TIMEOUT})


class RestartPolicy:
    """``max_restart``: whether a failed run is run again (runs that lived 5 minutes reset the count)."""

    def __init__(self, max_restart: int, stable_after: float = STABLE_AFTER) -> None:
        self.max_restart = max_restart
        self.stable_after = stable_after
        self.restarts = 0

    def should_restart(self, state: str, lived: float) -> bool:
        """After a run that ended in ``state`` having lived ``lived`` seconds: start it again?"""
        if lived >= self.stable_after:
            self.restarts = 0
        if state not in RESTARTABLE or self.restarts >= self.max_restart:
            return False
        self.restarts += 1
        return True
