"""Loaded by each Python process of the grid that ``bench.timeline`` starts (it puts this folder first on
``PYTHONPATH``): with ``AC_TIMELINE`` set, every ``os.read`` and ``os.write`` is noted with the time, and
the notes are written to ``$AC_TIMELINE.<pid>`` when the process exits.

``acbus`` reads and writes its sockets with exactly these two calls, so the notes are each daemon's
receives and sends to the bus. Noting costs about a microsecond a call: a timeline taken this way is
the path as it runs, not slowed as ``MONITOR`` or ``strace`` slow it.
"""

import atexit
import os
import sys
import time

_PREFIX = os.environ.get("AC_TIMELINE")

if _PREFIX:
    _notes: list[tuple[int, str, int]] = []
    _read, _write = os.read, os.write
    _clock = time.perf_counter_ns  # CLOCK_MONOTONIC: the same clock in every process of the machine

    def _noting_read(fd: int, length: int) -> bytes:
        data = _read(fd, length)
        _notes.append((_clock(), "recv", len(data)))
        return data

    def _noting_write(fd: int, data: bytes) -> int:
        _notes.append((_clock(), "send", len(data)))
        return _write(fd, data)

    def _save() -> None:
        # sys.argv[0] is only the module's path by now (``python -m agent``: ".../agent/__main__.py").
        process = os.path.basename(os.path.dirname(sys.argv[0])) or "python"
        with open(f"{_PREFIX}.{os.getpid()}", "w") as notes:
            notes.writelines(f"{at} {process} {kind} {size}\n" for at, kind, size in _notes)

    os.read, os.write = _noting_read, _noting_write  # type: ignore[assignment]
    atexit.register(_save)
