"""Running the real ``ac`` (a child process: ``python -m acclient.cli``) the way an operator does."""

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from support import TIMEOUT

AC = [sys.executable, "-m", "acclient.cli"]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Ran:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    @property
    def job_id(self) -> str:
        """The id ``ac exec`` announced on stderr."""
        match = re.match(r"job (\S+): ", self.err)
        assert match, self.err
        return match.group(1)

    def summary(self) -> str:
        return next(line for line in self.err_lines if line.startswith("summary: "))


def environment(bus: str | None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AC_")}
    if bus is not None:
        env["AC_BUS"] = bus
    return {**env, **extra}


def ac(bus: str | None, *argv: str, input: str | None = None, timeout: float = 2 * TIMEOUT,
       env: dict[str, str] | None = None) -> Ran:
    """Run ``ac argv`` against ``bus`` (through ``$AC_BUS``) to its end."""
    started = time.monotonic()
    done = subprocess.run([*AC, *argv], input=input, capture_output=True, text=True, timeout=timeout,
                          env=env or environment(bus), stdin=None if input is not None else subprocess.DEVNULL)
    return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


@contextlib.contextmanager
def ac_grid(*argv: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    """``ac-grid argv`` running (stopped on exit): the lines it printed until it was up, and the settings it says
    to paste (``export NAME=value``, as printed)."""
    grid = subprocess.Popen([str(Path(sys.executable).parent / "ac-grid"), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        lines = []
        assert grid.stdout is not None  # a pipe
        for line in grid.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("press Ctrl-C"):
                break
        match = (re.fullmatch(r"  export (AC_\w+)=(.*)", line) for line in lines)
        yield lines, dict(found.groups() for found in match if found)
    finally:
        grid.send_signal(signal.SIGTERM)
        grid.wait(timeout=TIMEOUT)


class Running:
    """``ac`` running in the background; its output read line by line as it comes."""

    def __init__(self, bus: str, *argv: str) -> None:
        self.process = subprocess.Popen([*AC, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=environment(bus))
        self.out: queue.Queue[str | None] = queue.Queue()
        self.err: queue.Queue[str | None] = queue.Queue()
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=_pump, args=(stream, lines), daemon=True).start()

    def next_line(self, stream: str = "out", timeout: float = TIMEOUT) -> str:
        line = (self.out if stream == "out" else self.err).get(timeout=timeout)
        assert line is not None, f"ac ended ({self.process.wait()}) before printing another line on std{stream}"
        return line.rstrip("\n")

    def rest(self, stream: str = "out") -> list[str]:
        """The remaining lines, once the process ended."""
        self.process.wait(timeout=TIMEOUT)
        lines, source = [], self.out if stream == "out" else self.err
        while (line := source.get(timeout=TIMEOUT)) is not None:
            lines.append(line.rstrip("\n"))
        return lines

    def wait(self) -> int:
        return self.process.wait(timeout=TIMEOUT)


def _pump(stream: IO[str], lines: "queue.Queue[str | None]") -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)
