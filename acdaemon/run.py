"""Running a daemon's trio loop from its command line, and how it may end."""

import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import trio

#: Exit status of a daemon that cannot start as configured (sysexits' EX_CONFIG). The systemd units
#: do not restart a daemon that exits with it (``RestartPreventExitStatus``): it would only fail again.
EXIT_CONFIG = 78


class StartError(Exception):
    """The daemon cannot start; the message says why."""


def refuse(prog: str, reason: object) -> NoReturn:
    """Exit with ``EXIT_CONFIG`` and the reason on stderr."""
    print(f"{prog}: {reason}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def run_daemon(prog: str, main: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``trio.run(main, *args)``; a ``StartError`` from anywhere inside ends the process with its message."""
    try:
        return trio.run(main, *args)
    except StartError as exc:
        refuse(prog, exc)
    except BaseExceptionGroup as group:  # the nurseries it crossed wrapped it
        refused: StartError | BaseExceptionGroup[StartError] | None = group.subgroup(StartError)
        if refused is None:
            raise
        while isinstance(refused, BaseExceptionGroup):
            refused = refused.exceptions[0]
        refuse(prog, refused)
