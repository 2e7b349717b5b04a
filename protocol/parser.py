"""The output parser: turns a process's stdout or stderr into level messages.

A line ``N::text`` is one message of level N. A line ``N:::`` opens a block
(text after ``:::`` is its first line) that a line of exactly ``:::`` closes.
Any other line is a message at the stream's own level (1 stdout, 2 stderr).

The parser is fed raw byte chunks as they arrive from a pipe, split anywhere;
the messages depend only on the bytes, never on how they were chunked. Memory
is bounded: an overlong line is cut into pieces of ``max_line_bytes`` and a
block keeps at most ``max_block_chars`` characters.
"""

import re
from dataclasses import dataclass

from protocol.levels import MAX_LEVEL

BLOCK_END = ":::"
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
DEFAULT_MAX_BLOCK_CHARS = 16 * 1024 * 1024

_TAGGED = re.compile(r"(\d{1,3})::(:?)(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a job's output: its level and its text (a block's lines joined)."""

    level: int
    text: str


class OutputParser:
    """Parses one output stream, chunk by chunk."""

    def __init__(self, default_level: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 max_block_chars: int = DEFAULT_MAX_BLOCK_CHARS) -> None:
        self.default_level = default_level
        self.max_line_bytes = max_line_bytes
        self.max_block_chars = max_block_chars
        self._partial = b""
        self._block_level: int | None = None
        self._block_lines: list[str] = []
        self._block_size = 0
        self._block_dropped = 0

    def feed(self, chunk: bytes) -> list[Message]:
        """Messages completed by ``chunk``."""
        messages: list[Message] = []
        lines = (self._partial + chunk).split(b"\n")
        partial = lines.pop()
        limit = self.max_line_bytes
        for line in lines:
            if len(line) <= limit:
                self._take_line(line, messages)
            else:
                for start in range(0, len(line), limit):
                    self._take_line(line[start:start + limit], messages)
        while len(partial) > limit:
            self._take_line(partial[:limit], messages)
            partial = partial[limit:]
        self._partial = partial
        return messages

    def close(self) -> list[Message]:
        """Messages still pending at end of stream: a last unterminated line, an open block."""
        messages: list[Message] = []
        if self._partial:
            self._take_line(self._partial, messages)
            self._partial = b""
        if self._block_level is not None:
            messages.append(self._end_block())
        return messages

    def _take_line(self, raw: bytes, messages: list[Message]) -> None:
        text = raw.removesuffix(b"\r").decode("utf-8", "replace")
        if self._block_level is not None:
            if text == BLOCK_END:
                messages.append(self._end_block())
            else:
                self._add_block_line(text)
            return
        if text[:1].isdigit():
            tagged = _TAGGED.fullmatch(text)
            if tagged and int(tagged[1]) <= MAX_LEVEL:
                level, opens_block, rest = int(tagged[1]), tagged[2], tagged[3]
                if not opens_block:
                    messages.append(Message(level, rest))
                    return
                self._block_level = level
                if rest:
                    self._add_block_line(rest)
                return
        messages.append(Message(self.default_level, text))

    def _add_block_line(self, text: str) -> None:
        size = len(text) + 1
        if self._block_size + size > self.max_block_chars:
            self._block_dropped += size
            return
        self._block_lines.append(text)
        self._block_size += size

    def _end_block(self) -> Message:
        assert self._block_level is not None  # only called while a block is open
        text = "\n".join(self._block_lines)
        if self._block_dropped:
            text += f"\n[{self._block_dropped} more characters dropped: block over {self.max_block_chars} characters]"
        message = Message(self._block_level, text)
        self._block_level = None
        self._block_lines = []
        self._block_size = 0
        self._block_dropped = 0
        return message
