"""Job JSON: what a client reads back for each agent that runs a command."""

import json
import time
from dataclasses import dataclass, field
from typing import Any

from protocol.command import Command
from protocol.errors import bounded
from protocol.jsontext import compact
from protocol.states import FINAL_STATES, Phase, State

#: Lines of stdout and stderr kept in a job's ``streams``.
STREAM_TAIL_LINES = 1000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Job:
    """One agent's view of one command (one run, for recurring jobs)."""

    id: str
    gid: int
    nid: int
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)
    data: str = ""
    level: int = 0
    state: str = State.RUNNING
    starttime: int = 0
    time: int = 0
    streams: list[str] = field(default_factory=lambda: ["", ""])
    critical: str = ""
    tags: str | None = None
    pid: int | None = None
    #: Set on a run's result when another run of the same job follows (a restart, a recurring run).
    more: bool = False
    #: A ``RUNNING`` job that has not started yet: what it waits for (``protocol.states.Phase``).
    phase: str | None = None
    #: How the job's process ended: its exit status, or minus the signal that ended it (none: no process ended).
    exitcode: int | None = None

    @classmethod
    def for_command(cls, command: Command, gid: int, nid: int, state: State = State.RUNNING,
                    data: str = "", phase: Phase | None = None) -> "Job":
        return cls(command.id, gid, nid, command.cmd, command.args.to_wire(), data=data,
                   state=state, tags=command.tags, phase=phase)

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> "Job":
        known = {key: wire[key] for key in cls.__slots__ if key in wire}
        return cls(**known)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Job":
        return cls.from_wire(json.loads(raw))

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def to_wire(self) -> dict[str, Any]:
        wire = {key: getattr(self, key) for key in self.__slots__}
        if wire["pid"] is None:
            del wire["pid"]
        if not wire["more"]:
            del wire["more"]
        if wire["phase"] is None:
            del wire["phase"]
        if wire["exitcode"] is None:
            del wire["exitcode"]
        return wire

    def to_json(self) -> str:
        return compact(self.to_wire())


#: Bytes of a command's run arguments an error answer echoes at the most (what it refuses may be huge).
MAX_ECHOED_ARGS = 4096


def echoed_args(args: dict[str, Any]) -> dict[str, Any]:
    """The run arguments an error answer repeats: all of them when small, else only the small ones."""
    if len(compact(args)) <= MAX_ECHOED_ARGS:
        return args
    return {key: value for key, value in args.items() if len(compact(value)) <= MAX_ECHOED_ARGS // 16}


def error_job(command_id: str, data: str, *, gid: int = 0, nid: int = 0, cmd: str = "",
              args: dict[str, Any] | None = None, tags: str | None = None) -> Job:
    """A final ``ERROR`` job carrying a reason, for a command that could not run (its text and the run
    arguments it repeats bounded)."""
    return Job(command_id, gid, nid, cmd, echoed_args(args or {}), data=bounded(data), state=State.ERROR,
               starttime=now_ms(), tags=tags)
