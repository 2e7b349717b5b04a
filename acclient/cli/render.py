"""How ``ac`` shows things to people: tables, durations, times, sets of agents."""

import datetime
import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

Agent = tuple[int, int]


def nodeset(agents: Iterable[Agent]) -> str:
    """Agents the short way: ``1:1-9,11 2:4`` (runs of node ids per grid)."""
    by_grid: dict[int, list[int]] = {}
    for gid, nid in sorted(set(agents)):
        by_grid.setdefault(gid, []).append(nid)
    parts = []
    for gid, nids in by_grid.items():
        runs: list[str] = []
        start = previous = nids[0]
        for nid in nids[1:]:
            if nid == previous + 1:
                previous = nid
                continue
            runs.append(str(start) if start == previous else f"{start}-{previous}")
            start = previous = nid
        runs.append(str(start) if start == previous else f"{start}-{previous}")
        parts.append(f"{gid}:{','.join(runs)}")
    return " ".join(parts)


def agent_name(agent: Agent) -> str:
    return f"{agent[0]}:{agent[1]}"


def duration(seconds: float | None, suffix: str = "") -> str:
    """``seconds`` the way people say it: 4s, 12m 5s, 3h 20m, 2d 4h."""
    if seconds is None:
        return ""
    seconds = max(0, round(seconds))
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // smaller_size}{smaller}{suffix}"
    return f"{seconds}s{suffix}"


def elapsed(seconds: float) -> str:
    """A run's length: ``0.4 s``, ``12.3 s``, ``2m 5s``."""
    return f"{seconds:.1f} s" if seconds < 60 else duration(seconds)


def timestamp(epoch: float | None, utc: bool) -> str:
    """Epoch seconds as a date and time, local (or UTC, marked ``Z``)."""
    if not epoch:
        return ""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC if utc else None)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if utc else "")


def table(headers: list[str], rows: list[list[Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cells = [headers, *[[cell(value) for value in row] for row in rows]]
    widths = [max(len(row[index]) for row in cells) for index in range(len(headers))]
    for row in cells:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip(), file=out)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return "" if value is None else str(value)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def print_jsonl(value: Any) -> None:
    print(json.dumps(value, default=str))


def prefixed(prefix: str, text: str, out: TextIO) -> None:
    """Each line of ``text`` after ``prefix`` (as pdsh and clush print a node's output)."""
    for line in text.rstrip("\n").split("\n"):
        print(f"{prefix}{line}", file=out)


def cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def shell_words(words: Iterable[str]) -> str:
    """Words as a shell would need them quoted (for commands ``ac`` suggests or shows)."""
    import shlex

    return " ".join(shlex.quote(word) for word in words)
