"""What the agent's two SQLite files (the message DB and the state DB) share.

The agent opens each once, at start-up, and closes it when it stops; a use
outside that span is a bug in the agent, not a state to recover from.
"""

import sqlite3
from pathlib import Path


class SQLiteFile:
    """One SQLite file: ``connect`` in ``open``, ``close`` once; ``_open_db`` for every use in between."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _connect(self, *, check_same_thread: bool = True) -> sqlite3.Connection:
        """Open the file (and its folder, the first time), in autocommit mode."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=check_same_thread)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def _open_db(self) -> sqlite3.Connection:
        assert self._db is not None, f"{type(self).__name__} used before open()"  # the agent opens it first
        return self._db
