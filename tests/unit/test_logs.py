"""Daemon logging: timestamps for people, syslog priorities and no timestamps for systemd's journal."""

import logging
import os
import re
import subprocess
import sys

from acdaemon.logs import JournalFormatter, writes_to_journal

LOG_SOME = """
import logging
from acdaemon.logs import setup_logging
setup_logging("INFO")
log = logging.getLogger("agent.jobs")
log.debug("not shown")
log.info("job j1 (execute) started")
log.warning("job j2 (execute): level 7")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("job j3 failed")
"""


def run_logging(tmp_path, journal: bool) -> list[str]:
    """Run LOG_SOME with stderr to a file; ``journal``: JOURNAL_STREAM names that file, as systemd sets it."""
    path = tmp_path / "stderr"
    with open(path, "wb") as stderr:
        status = os.fstat(stderr.fileno())
        env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
        if journal:
            env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
        subprocess.run([sys.executable, "-c", LOG_SOME], stderr=stderr, env=env, check=True, timeout=60)
    return path.read_text().splitlines()


def test_under_the_journal_lines_carry_priorities_and_no_timestamps(tmp_path):
    lines = run_logging(tmp_path, journal=True)
    assert lines[:2] == ["<6>INFO agent.jobs: job j1 (execute) started",
                         "<4>WARNING agent.jobs: job j2 (execute): level 7"]
    assert lines[2] == "<3>ERROR agent.jobs: job j3 failed"
    assert len(lines) > 4 and all(line.startswith("<3>") for line in lines[2:]), "the traceback keeps its priority"
    assert lines[-1] == "<3>ZeroDivisionError: division by zero"


def test_elsewhere_lines_start_with_a_timestamp(tmp_path):
    lines = run_logging(tmp_path, journal=False)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO agent.jobs: job j1 \(execute\) started", lines[0])


def test_journal_stream_of_another_file_is_not_the_journal(tmp_path, monkeypatch):
    with open(tmp_path / "a", "w") as first, open(tmp_path / "b", "w") as second:
        status = os.fstat(first.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        assert writes_to_journal(first) and not writes_to_journal(second)
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    assert not writes_to_journal(sys.stderr)


def test_debug_is_priority_7():
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "detail", None, None)
    assert JournalFormatter().format(record) == "<7>DEBUG x: detail"
