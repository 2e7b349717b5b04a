"""acdaemon.logs.LogBudget: at most ``burst`` lines per subject and interval; the next line says how many were held."""

import logging

from acdaemon.logs import LogBudget


def test_a_flood_about_one_subject_is_cut_to_the_burst_and_the_next_window_says_how_many_were_held(caplog,
                                                                                                    monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("acdaemon.logs.time.monotonic", lambda: now[0])
    budget = LogBudget(logging.getLogger("budget-test"), burst=3, interval=10.0)
    with caplog.at_level(logging.INFO, logger="budget-test"):
        for number in range(100):
            budget.log("flooder", logging.WARNING, "junk %d", number)
            if number < 2:
                budget.log("honest", logging.INFO, "event %d", number)  # another subject has a budget of its own
        now[0] += 10.0
        budget.log("flooder", logging.WARNING, "junk %d", 100)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["junk 0", "event 0", "junk 1", "event 1", "junk 2",
                     "junk 100 (and 97 such lines held back since the last)"]
