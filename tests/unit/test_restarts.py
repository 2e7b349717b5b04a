"""max_restart: the 5-minute rule, with a fake clock (run lifetimes given directly)."""

from agent.restarts import STABLE_AFTER, RestartPolicy


def runs_until_given_up(policy, lifetimes, state="ERROR"):
    runs = 0
    for lived in lifetimes:
        runs += 1
        if not policy.should_restart(state, lived):
            return runs
    return runs


def test_n_restarts_make_n_plus_one_runs():
    assert runs_until_given_up(RestartPolicy(3), [1.0] * 10) == 4
    assert runs_until_given_up(RestartPolicy(0), [1.0] * 10) == 1


def test_timeouts_restart_successes_and_kills_do_not():
    policy = RestartPolicy(2)
    assert policy.should_restart("TIMEOUT", 1.0)
    assert not policy.should_restart("SUCCESS", 1.0)
    assert not policy.should_restart("KILLED", 1.0)


def test_a_run_that_lived_five_minutes_resets_the_count():
    policy = RestartPolicy(2)
    assert policy.should_restart("ERROR", 10)
    assert policy.should_restart("ERROR", 10)
    assert not policy.should_restart("ERROR", 10)  # two restarts used up
    policy = RestartPolicy(2)
    lifetimes = [10, 10, STABLE_AFTER, 10, 10, STABLE_AFTER - 1]
    assert [policy.should_restart("ERROR", lived) for lived in lifetimes] == [True, True, True, True, False, False]


def test_the_stable_time_is_five_minutes():
    assert STABLE_AFTER == 300
