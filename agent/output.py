"""What one run's output becomes: its result, its critical message, the tails
of its streams, statsd values, and messages for the loggers."""

import collections
from collections.abc import Callable, Sequence

from agent.loggers import JobLog
from protocol.job import STREAM_TAIL_LINES
from protocol.levels import CRITICAL, RESULT_LEVELS, STATSD, STDERR, WARNING
from protocol.parser import Message

#: Characters kept per stream tail, whatever the line count.
STREAM_TAIL_CHARS = 1024 * 1024

#: Takes a level-10 line; returns what is wrong with it, if anything.
StatsdHandler = Callable[[str], str | None]


class StreamTail:
    """The last lines of a stream, bounded in lines and in characters."""

    def __init__(self, max_lines: int = STREAM_TAIL_LINES, max_chars: int = STREAM_TAIL_CHARS) -> None:
        self.max_lines = max_lines
        self.max_chars = max_chars
        self._lines: collections.deque[str] = collections.deque()
        self._chars = 0

    def add(self, text: str) -> None:
        lines = self._lines
        for line in text.split("\n") if "\n" in text else (text,):
            if len(line) >= self.max_chars:  # with its newline it must fit
                line = line[1 - self.max_chars:]
            lines.append(line)
            self._chars += len(line) + 1
        while len(lines) > self.max_lines or self._chars > self.max_chars:
            self._chars -= len(lines.popleft()) + 1

    def text(self) -> str:
        return "\n".join(self._lines) + ("\n" if self._lines else "")


class RunOutput:
    """The output sink of one run (see ``agent.process.OutputSink``).

    What the run reports about itself is taken from every message, before any
    filter, as the 2015 agent did: its result (the last message at a result
    level), its critical message, its statsd values and the stream tails.
    ``loglevels`` (``keep``) only decides which messages reach the loggers, so
    narrowing it never loses the result.
    """

    def __init__(self, log: JobLog, keep: frozenset[int] | None, on_statsd: StatsdHandler) -> None:
        self.log = log
        self.keep = keep
        self.on_statsd = on_statsd
        self.level = 0
        self.data = ""
        self.critical = ""
        self.tails = (StreamTail(), StreamTail())

    def add(self, stream_level: int, messages: Sequence[Message]) -> None:
        """Messages read from stdout (``stream_level`` 1) or stderr (2)."""
        tail = self.tails[stream_level == STDERR]
        keep = self.keep
        kept: list[Message] = []
        for message in messages:
            tail.add(message.text)
            level = message.level
            if keep is None or level in keep:
                kept.append(message)
            if level in RESULT_LEVELS:
                self.level, self.data = level, message.text
            elif level == CRITICAL:
                self.critical = message.text
            elif level == STATSD:
                problem = self.on_statsd(message.text)
                if problem is not None and (keep is None or WARNING in keep):
                    kept.append(Message(WARNING, problem))
        self.log.emit(kept)

    async def room(self) -> None:
        await self.log.room()

    def streams(self) -> list[str]:
        return [self.tails[0].text(), self.tails[1].text()]
