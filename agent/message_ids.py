"""The agent's message id counter, kept across restarts in ``[main] message_id_file``.

The file holds the end of the block of ids reserved so far. Ids are handed
out from memory; only when a block is used up is the next one reserved (the
file rewritten atomically and synced). After a crash the counter resumes at
the end of the last reserved block: ids may skip, never repeat.
"""

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

#: Ids reserved per write of the file.
BLOCK = 100_000


class MessageIds:
    """The agent's message counter: ids handed out in order, reserved on disk in blocks, surviving restarts."""

    def __init__(self, path: str | Path, at_least: int = 1, block: int = BLOCK) -> None:
        """``at_least``: the next id must not be lower (e.g. the message DB's highest id + 1)."""
        self.path = Path(path)
        self.block = block
        self._next = max(self._read(), at_least)
        self._first = self._next
        self._reserved = self._next
        self._reserve(self._next + self.block)  # at start: a file that cannot be written fails now

    @property
    def next(self) -> int:
        return self._next

    @property
    def taken(self) -> int:
        """Ids handed out since start: the messages logged."""
        return self._next - self._first

    def take(self, count: int) -> int:
        """Reserve ``count`` consecutive ids; return the first."""
        first = self._next
        self._next += count
        if self._next > self._reserved:
            try:
                self._reserve(self._next + self.block)
            except OSError as exc:  # e.g. a full disk: carry on; ids may repeat only after a restart
                log.error("cannot write %s: %s", self.path, exc)
                self._reserved = self._next + self.block
        return first

    def _read(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 1
        if not text.isdigit():
            raise ValueError(f"{self.path}: expected the next message id (a number), found {text[:40]!r}")
        return int(text)

    def _reserve(self, end: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w") as file:
            file.write(f"{end}\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        self._reserved = end
