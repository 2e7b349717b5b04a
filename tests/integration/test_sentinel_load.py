"""A failover under load (slow): the master SIGKILLed while 5 000 commands flow from four clients and their
results flow back, once as Redis replicates by default and once with wait_replicas = 1 (agents and clients
confirm their writes with WAIT). Printed: the failover's seconds, and per command what was lost or duplicated,
each with its reason (``bench.failover`` counts them)."""

import pytest

from bench import failover
from protocol.states import State

#: What a command may end with when a failover took it, besides its result (each says what happened; the
#: second, if the sentinels ever promoted a replica still loading its first sync).
FAILOVER_ANSWERS = {"CommandLost (a failover lost it)", "CommandLost (the bus lost its data)"}


@pytest.mark.slow
def test_a_failover_under_load_answers_every_command_once():
    outcomes = [failover.run(commands=5000, clients=4, window=50, wait_replicas=replicas) for replicas in (0, 1)]
    for outcome in outcomes:
        print("\n".join(outcome.lines()))
    default, waiting = outcomes
    for outcome in outcomes:
        assert sum(outcome.answers.values()) == outcome.commands
        assert outcome.answers[failover.NO_ANSWER] == 0, "no command left waiting"
        assert set(outcome.answers) - {State.SUCCESS, failover.NO_ANSWER} <= FAILOVER_ANSWERS, outcome.answers
        assert outcome.failover_seconds < 15
    assert default.lost < default.commands // 10, "what async replication loses is the last moment's writes"
    assert waiting.lost == 0, "with WAIT, a failover loses no command"
    assert sum(waiting.duplicated.values()) <= 4 * 50, "at most what was in flight, sent again"
