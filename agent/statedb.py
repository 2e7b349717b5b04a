"""The agent's state DB (``[main] history_file``): its long-running jobs.

A job with ``max_time = -1`` is written here when it arrives and removed when
it is over, so an agent that restarts (``restart``, a crash, a reboot) starts
it again. Each run's process group is recorded too: if the agent was killed,
its jobs' groups may still run, and they are stopped before the job starts
again, so a job never runs twice.

Writes are tiny and rare (one per long-running job and run), so they are
made directly, in SQLite's default rollback-journal mode.
"""

from dataclasses import dataclass
from pathlib import Path

from agent.sqlitefile import SQLiteFile


@dataclass(frozen=True, slots=True)
class SavedJob:
    """A long-running job as the state DB keeps it."""

    id: str
    controller: str  # the [controllers.<name>] the command came from
    command: bytes  # the raw command, as taken from the bus
    pid: int | None
    started: float | None  # the process's start time (for recognising it)


class StateDB(SQLiteFile):
    """The agent's long-running jobs and their process groups, kept across restarts."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(Path(path))

    def open(self) -> None:
        self._connect().execute("CREATE TABLE IF NOT EXISTS long_running (id TEXT PRIMARY KEY, controller TEXT "
                                "NOT NULL, command BLOB NOT NULL, pid INTEGER, started REAL)")

    def jobs(self) -> list[SavedJob]:
        rows = self._open_db.execute("SELECT id, controller, command, pid, started FROM long_running ORDER BY rowid")
        return [SavedJob(id_, controller, bytes(command), pid, started)
                for id_, controller, command, pid, started in rows]

    def add(self, job_id: str, controller: str, command: bytes) -> None:
        self._open_db.execute("INSERT OR REPLACE INTO long_running (id, controller, command) VALUES (?, ?, ?)",
                         (job_id, controller, command))

    def set_process(self, job_id: str, pid: int, started: float | None) -> None:
        self._open_db.execute("UPDATE long_running SET pid = ?, started = ? WHERE id = ?", (pid, started, job_id))

    def remove(self, job_id: str) -> None:
        self._open_db.execute("DELETE FROM long_running WHERE id = ?", (job_id,))
