"""What an external job runs: ``execute`` or an extension of ``[extensions.*]``.

Both become a ``ProcessSpec`` (argv, working directory, environment, stdin),
built when the command arrives, so a command that cannot run is answered at
once instead of after waiting for a free slot.

An extension's ``args`` are templates filled from the job's run arguments:
``"{domain}/{name}.py"``. A template element that is exactly ``"{args}"``
stands for the job's whole argument list. Only plain ``{key}`` fields naming
a run argument are allowed, so a template can never reach into an object.
"""

import string
from dataclasses import dataclass

from acdaemon.notify import child_environment
from agent.process import ProcessSpec, SpawnError
from protocol.command import Command, RunArgs, check_path_component
from protocol.errors import ProtocolError, shown

#: Run arguments a template may name; ``args`` only as a whole element.
TEMPLATE_FIELDS = frozenset(RunArgs.__slots__) - {"env"}
WHOLE_ARGS = "{args}"


@dataclass(frozen=True, slots=True)
class Extension:
    """``[extensions.<name>]``: a command turned into an ``execute`` of ``binary``."""

    name: str
    binary: str
    cwd: str
    args: tuple[str, ...]
    env: dict[str, str]


class Identity:
    """Who runs the jobs: what every child finds in its environment.

    The agent's own environment is read once, at start.
    """

    def __init__(self, gid: int, nid: int, home: str) -> None:
        self.gid = gid
        self.nid = nid
        self.home = home
        self._base = {**child_environment(), "AGENT_GID": str(gid), "AGENT_NID": str(nid), "AGENT_HOME": home}

    def environment(self, command: Command, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = self._base.copy()
        env["AGENT_JOBID"] = command.id
        if extra:
            env.update(extra)
        if command.args.env:
            env.update(command.args.env)
        return env


def template_fields(template: str) -> list[str]:
    """The run arguments a template names; ``ValueError`` saying what is wrong with it."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template {template!r}: {exc}") from None
    fields = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion or field not in TEMPLATE_FIELDS:
            raise ValueError(f"template {template!r}: {{{field}}} is not a run argument "
                             f"(use plain fields: {', '.join(sorted(TEMPLATE_FIELDS))})")
        if field == "args" and template != WHOLE_ARGS:
            raise ValueError(f"template {template!r}: {{args}} must be a whole element (it is a list)")
        fields.append(field)
    return fields


def execute_spec(command: Command, identity: Identity) -> ProcessSpec:
    """``execute``: ``args.name`` is the binary, ``args.args`` its arguments, ``data`` its stdin."""
    if not command.args.name:
        raise SpawnError("execute needs args.name: the binary to run")
    return ProcessSpec(
        argv=(command.args.name, *(command.args.args or ())),
        cwd=command.args.working_dir,
        env=identity.environment(command),
        stdin=stdin_bytes(command.data),
    )


def extension_spec(command: Command, extension: Extension, identity: Identity) -> ProcessSpec:
    """An extension: ``binary`` in ``cwd`` with its ``args`` templates filled from the run arguments."""
    run_args = command.args
    if run_args.working_dir is not None:
        raise SpawnError(f"extension {extension.name} runs in its configured folder: args.working_dir is not allowed")
    for key in ("domain", "name"):
        value = getattr(run_args, key)
        if value is not None:
            try:
                check_path_component(value, f"args.{key}")
            except ProtocolError as exc:
                raise SpawnError(f"extension {extension.name}: {exc}") from None
    values = run_args.to_wire()
    argv = [extension.binary]
    for template in extension.args:
        fields = template_fields(template)
        for field in fields:
            if field not in values:
                raise SpawnError(f"extension {extension.name}: run argument {shown(field)} is missing "
                                 f"(its args template {template!r} needs it)")
        if template == WHOLE_ARGS:
            argv.extend(values["args"])
        else:
            argv.append(template.format_map({field: _text(values[field]) for field in fields}))
    return ProcessSpec(
        argv=tuple(argv),
        cwd=extension.cwd or None,
        env=identity.environment(command, extension.env),
        stdin=stdin_bytes(command.data),
    )


def stdin_bytes(data: str) -> bytes:
    """A command's ``data`` as the process reads it: UTF-8. Text that has none (a lone surrogate) is refused."""
    try:
        return data.encode()
    except UnicodeEncodeError as exc:
        raise SpawnError(f"data holds text that cannot be encoded as UTF-8 ({exc.reason} at position "
                         f"{exc.start})") from None


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
