"""What a job's output becomes: its result, its critical message, the tails
of its streams, and log messages for the loggers."""

import collections
from collections.abc import Callable

from protocol.job import STREAM_TAIL_LINES
from protocol.levels import CRITICAL, RESULT_LEVELS, STDERR
from protocol.parser import Message

#: Characters kept per stream tail, whatever the line count.
STREAM_TAIL_CHARS = 1024 * 1024

#: Receives every message the job's ``loglevels`` keep.
MessageSink = Callable[[Message], None]


class StreamTail:
    """The last lines of a stream, bounded in lines and in characters."""

    def __init__(self, max_lines: int = STREAM_TAIL_LINES, max_chars: int = STREAM_TAIL_CHARS) -> None:
        self.max_lines = max_lines
        self.max_chars = max_chars
        self._lines: collections.deque[str] = collections.deque()
        self._chars = 0

    def add(self, text: str) -> None:
        for line in text.split("\n"):
            line = line[-self.max_chars:]
            self._lines.append(line)
            self._chars += len(line) + 1
        while len(self._lines) > self.max_lines or self._chars > self.max_chars:
            self._chars -= len(self._lines.popleft()) + 1

    def text(self) -> str:
        return "\n".join(self._lines) + ("\n" if self._lines else "")


class JobOutput:
    def __init__(self, keep: frozenset[int] | None = None, sink: MessageSink | None = None) -> None:
        self.keep = keep
        self.sink = sink
        self.level = 0
        self.data = ""
        self.critical = ""
        self.tails = (StreamTail(), StreamTail())

    def add(self, stream_level: int, message: Message) -> None:
        """A message read from stdout (``stream_level`` 1) or stderr (2)."""
        self.tails[stream_level == STDERR].add(message.text)
        if self.keep is not None and message.level not in self.keep:
            return
        if message.level in RESULT_LEVELS:
            self.level, self.data = message.level, message.text
        elif message.level == CRITICAL:
            self.critical = message.text
        if self.sink is not None:
            self.sink(message)

    def streams(self) -> list[str]:
        return [self.tails[0].text(), self.tails[1].text()]
