"""The shell completions and the man page of ``ac``, generated from its parser: by ``shtab`` (completions) and
``argparse-manpage`` (the man page), when the package is built (``setup.py``), into ``acclient/cli/share/``.

Like ``parser.py`` this module imports nothing of the package at its top, so the build can load it by its path.
"""

import argparse
from importlib import resources
from pathlib import Path

MANPAGE = "ac.1"
SHARE = "share"
SHELLS = ("bash", "zsh", "tcsh")


def completion_name(shell: str) -> str:
    return f"ac.{shell}"


def generate(parser: argparse.ArgumentParser, version: str) -> dict[str, str]:
    """Every generated file: name -> text."""
    import shtab
    from argparse_manpage.manpage import Manpage  # type: ignore[import-untyped]

    files = {completion_name(shell): shtab.complete(parser, shell=shell) for shell in SHELLS}
    page = Manpage(parser)
    page.source = f"agentcontroller {version}"
    page.manual = "agentcontroller"
    files[MANPAGE] = str(page)
    return files


def write_all(folder: Path, parser: argparse.ArgumentParser, version: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate(parser, version).items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


def shipped(name: str) -> str:
    """A generated file as the package carries it; in a checkout (an editable install has none), made now."""
    carried = resources.files("acclient.cli") / SHARE / name
    if carried.is_file():
        return carried.read_text()
    from acclient.cli.app import Failure
    from acclient.cli.parser import build_parser, version

    try:
        return generate(build_parser(), version())[name]
    except ImportError as exc:
        raise Failure(f"{name} is made when the package is built (pip install . or the wheel); in this checkout "
                      f"it needs {exc.name}: pip install shtab argparse-manpage") from None
