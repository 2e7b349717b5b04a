"""The message DB: every message the DB logger keeps, in SQLite (WAL mode).

Two tables, so a job's id, domain and name are stored once, not per message::

    jobs(key, jobid, domain, name)
    messages(id, job -> jobs.key, epoch, level, data)

``messages`` is indexed for the ``get_msgs`` filters: by job, by time and by
level, each newest first. The size and age bounds are applied after writes:
the oldest messages go first. Job keys are handed out by the writer
(``next_job_key``); a job id seen again after a restart gets a new key, and
``get_msgs`` finds all of them.

A batch is inserted as one JSON parameter expanded by SQLite (``json_each``),
not row by row: ``executemany`` gives up Python's GIL for every row and must
win it back each time, which, beside a busy event loop, made it ~50 times
slower. This way a batch is one call that runs in C without the GIL.

The class is synchronous on purpose: the DB logger calls it from a worker
thread, one batch at a time, and each query opens its own read connection
(WAL lets reads run beside the writer).
"""

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sqlitefile import SQLiteFile

DB_FILE = "messages.db"
#: Characters of one message's data that are stored; the rest is cut with a note.
MAX_STORED_CHARS = 64 * 1024
#: ``get_msgs`` never answers more messages than this.
MAX_QUERY_LIMIT = 1000
#: Seconds between checks of the age bound (checked only when messages arrive).
AGE_CHECK_INTERVAL = 60.0
#: When over ``max_bytes``, trim down to this share of it.
TRIM_TARGET = 0.8

#: ``(jobid, domain, name)``: the job a message belongs to.
JobRef = tuple[str, str, str]
#: A message as the logger hands it over: ``(id, job key, epoch, level, data)``.
Row = tuple[int, int, int, int, str]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key INTEGER PRIMARY KEY,
    jobid TEXT NOT NULL,
    domain TEXT NOT NULL,
    name TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_id ON jobs (jobid);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    level INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_job ON messages (job, id);
CREATE INDEX IF NOT EXISTS messages_by_epoch ON messages (epoch);
CREATE INDEX IF NOT EXISTS messages_by_level ON messages (level, id);
"""

#: Inserts a JSON list of rows; data over MAX_STORED_CHARS is cut, saying how much.
_INSERT_BATCH = f"""
INSERT OR REPLACE INTO messages (id, job, epoch, level, data)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3,
       CASE WHEN length(value ->> 4) <= {MAX_STORED_CHARS} THEN value ->> 4
            ELSE substr(value ->> 4, 1, {MAX_STORED_CHARS}) || char(10) || '['
                 || (length(value ->> 4) - {MAX_STORED_CHARS}) || ' more characters cut]' END
FROM json_each(?)
"""


def encode_rows(rows: list[Row]) -> str:
    """Rows as the JSON list ``insert`` takes."""
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def join_encoded(parts: list[str]) -> str:
    """One batch from several ``encode_rows`` results."""
    return parts[0] if len(parts) == 1 else "[" + ",".join(part[1:-1] for part in parts) + "]"


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """A checked ``get_msgs`` request; ``None`` means no filter."""

    jobid: str | None = None
    timefrom: float | None = None
    timeto: float | None = None
    levels: frozenset[int] | None = None
    limit: int = 20


class MessageDB(SQLiteFile):
    """The SQLite message DB: batch inserts, the ``get_msgs`` query, bounded by size and age."""

    def __init__(self, folder: str | Path, max_bytes: int, max_age: float) -> None:
        super().__init__(Path(folder) / DB_FILE)
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._age_checked = -AGE_CHECK_INTERVAL
        self.trimmed = 0

    def open(self) -> None:
        db = self._connect(check_same_thread=False)
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect only on a new file
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA journal_size_limit = 67108864")
        db.executescript(_SCHEMA)
        self.trim()

    def max_id(self) -> int:
        """The highest message id stored (0 when empty)."""
        return self._open_db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]

    def next_job_key(self) -> int:
        return self._open_db.execute("SELECT COALESCE(MAX(key), 0) + 1 FROM jobs").fetchone()[0]

    def insert(self, batch: str, jobs: dict[int, JobRef]) -> None:
        """Store a batch of messages (``encode_rows``), and the jobs their keys stand for, in one
        transaction; then apply the bounds."""
        db = self._open_db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR IGNORE INTO jobs VALUES (?, ?, ?, ?)",
                           [(key, *job) for key, job in jobs.items()])
            db.execute(_INSERT_BATCH, (batch,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.trim()

    def trim(self) -> int:
        """Apply the bounds (the age bound at most every ``AGE_CHECK_INTERVAL``); return how many messages went."""
        removed = 0
        if time.monotonic() - self._age_checked >= AGE_CHECK_INTERVAL:
            self._age_checked = time.monotonic()
            removed += self.trim_age(time.time())
        if self.size() > self.max_bytes:
            removed += self._trim_size()
        if removed:
            self._forget_empty_jobs()
        return removed

    def trim_age(self, now: float) -> int:
        """Remove messages older than ``max_age`` at ``now``."""
        removed = self._delete("DELETE FROM messages WHERE epoch < ?", (int(now - self.max_age),))
        self.trimmed += removed
        return removed

    def _forget_empty_jobs(self) -> None:
        self._delete("DELETE FROM jobs WHERE NOT EXISTS (SELECT 1 FROM messages WHERE job = jobs.key)", ())
        self._open_db.execute("PRAGMA incremental_vacuum")

    def size(self) -> int:
        """Bytes the stored data takes (pages in use)."""
        db = self._open_db
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * db.execute("PRAGMA page_size").fetchone()[0]

    def _trim_size(self) -> int:
        count = self._open_db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        if not count:
            return 0
        keep = int(count * TRIM_TARGET * self.max_bytes / self.size())
        cut = self._open_db.execute("SELECT id FROM messages ORDER BY id DESC LIMIT 1 OFFSET ?", (keep,)).fetchone()
        removed = self._delete("DELETE FROM messages WHERE id <= ?", (cut[0],)) if cut else 0
        self.trimmed += removed
        return removed

    def _delete(self, statement: str, parameters: tuple[Any, ...]) -> int:
        return self._open_db.execute(statement, parameters).rowcount

    def query(self, query: MessageQuery) -> list[dict[str, Any]]:
        """Messages matching ``query``, newest first, as ``get_msgs`` answers them."""
        where: list[str] = []
        parameters: list[str | float] = []
        if query.jobid is not None:
            where.append("m.job IN (SELECT key FROM jobs WHERE jobid = ?)")
            parameters.append(query.jobid)
        if query.timefrom is not None:
            where.append("m.epoch >= ?")
            parameters.append(query.timefrom)
        if query.timeto is not None:
            where.append("m.epoch <= ?")
            parameters.append(query.timeto)
        if query.levels is not None:
            where.append(f"m.level IN ({','.join(str(int(level)) for level in sorted(query.levels))})")
        statement = ("SELECT m.id, j.jobid, j.domain, j.name, m.epoch, m.level, m.data "
                     "FROM messages m JOIN jobs j ON j.key = m.job"
                     + (" WHERE " + " AND ".join(where) if where else "")
                     + " ORDER BY m.id DESC LIMIT ?")
        parameters.append(min(query.limit, MAX_QUERY_LIMIT))
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            rows = reader.execute(statement, parameters).fetchall()
        finally:
            reader.close()
        columns = ("id", "jobid", "domain", "name", "epoch", "level", "data")
        return [dict(zip(columns, row, strict=True)) for row in rows]
