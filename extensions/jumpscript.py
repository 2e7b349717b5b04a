"""The jumpscript runner: ``ac-jumpscript <domain> <name>`` (in the scripts folder).

It loads ``<domain>/<name>.py`` from the current folder (the agent runs it
with ``cwd`` set to the scripts folder, see ``[extensions.execute_js_py]``),
reads the job's ``data`` from stdin as JSON, calls the script's
``action(data)``, and prints the return value as a level-20 JSON result.
An exception becomes a level-9 critical message and exit code 1.
"""

import importlib.util
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from extensions import emit
from protocol.command import check_path_component
from protocol.errors import ProtocolError


class JumpscriptError(Exception):
    """The script cannot be run; the message says why."""


def load(folder: Path, domain: str, name: str) -> Any:
    """The ``action`` function of ``<folder>/<domain>/<name>.py``."""
    try:
        check_path_component(domain, "domain")
        check_path_component(name.removesuffix(".py"), "name")
    except ProtocolError as exc:
        raise JumpscriptError(str(exc)) from None
    path = folder / domain / f"{name.removesuffix('.py')}.py"
    if not path.is_file():
        raise JumpscriptError(f"no jumpscript {domain}/{name} (looked for {path})")
    spec = importlib.util.spec_from_file_location(f"jumpscript_{domain}_{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py file always has a spec with a source loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    action = getattr(module, "action", None)
    if not callable(action):
        raise JumpscriptError(f"jumpscript {domain}/{name} has no action(data) function")
    return action


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: ac-jumpscript <domain> <name>   (data as JSON on stdin)")
    domain, name = argv
    try:
        action = load(Path.cwd(), domain, name)
        raw = sys.stdin.read()
        data = json.loads(raw) if raw.strip() else None
        value = action(data)
    except JumpscriptError as exc:
        emit.message(emit.CRITICAL, str(exc))
        sys.exit(1)
    except json.JSONDecodeError as exc:
        emit.message(emit.CRITICAL, f"data is not JSON: {exc}")
        sys.exit(1)
    except Exception:
        emit.message(emit.CRITICAL, traceback.format_exc().rstrip())
        sys.exit(1)
    emit.result(value)


if __name__ == "__main__":
    main()
