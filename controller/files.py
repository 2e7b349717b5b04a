"""``ac-controller files``: what the wheel carries for a host besides the code.

The systemd units, the example configs (every key documented), the Prometheus alert rules and the Grafana
dashboard: the files of ``configs/`` in a checkout, package data ``controller/shipped/`` in the wheel (in a
checkout that folder is a link to ``configs/``), so that a node needs nothing but the wheel.

A name is a file's path in the listing (``systemd/ac-agent.service``), its file name when no other file has it
(``ac-agent.service``), or a folder (``systemd``). ``install DEST NAME`` puts a file in ``DEST`` under its file
name and a folder's files in ``DEST`` under their paths inside it; ``install DEST`` alone puts everything under
``DEST`` as listed.
"""

import filecmp
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

#: What the listing holds, by file name suffix (a checkout's configs/ may also hold what an example run left).
SHIPPED_SUFFIXES = (".toml", ".service", ".yml", ".json", ".py")
#: Where the units expect the console scripts (docs/operations.md installs them there).
UNITS_EXPECT = "/opt/agentcontroller/bin/"


class FilesError(Exception):
    """A name that names nothing, or files in the way; the message says which."""


@dataclass(frozen=True, slots=True)
class Placed:
    """One file of an install: where from, where to, and whether it was written or already there."""

    name: str
    source: Path
    target: Path
    written: bool


def root() -> Path:
    folder = resources.files("controller") / "shipped"
    return Path(str(folder))


def listing() -> list[str]:
    """Every file shipped, as a path relative to the root (``systemd/ac-agent.service``), sorted."""
    base = root()
    return sorted(str(PurePosixPath(path.relative_to(base))) for path in base.rglob("*")
                  if path.is_file() and path.suffix in SHIPPED_SUFFIXES and "__pycache__" not in path.parts)


def path_of(name: str) -> Path:
    """The file ``name`` names (its path in the listing, or a file name no other file has)."""
    files = listing()
    if name in files:
        return root() / name
    matches = [file for file in files if PurePosixPath(file).name == name]
    if len(matches) == 1:
        return root() / matches[0]
    if matches:
        raise FilesError(f"{name!r} is the name of several files: {', '.join(matches)}; give the path")
    raise FilesError(f"no shipped file {name!r} (ac-controller files list shows them)")


def show(name: str) -> str:
    return path_of(name).read_text()


def plan(dest: Path, names: list[str]) -> list[tuple[str, Path, Path]]:
    """``(name, source, target)`` of each file an install of ``names`` (none: everything) into ``dest`` writes."""
    files = listing()
    if not names:
        return [(file, root() / file, dest / file) for file in files]
    chosen: dict[Path, tuple[str, Path, Path]] = {}
    for name in names:
        folder = name.strip("/")
        inside = [file for file in files if file.startswith(folder + "/")]
        if inside:
            for file in inside:
                chosen[dest / file[len(folder) + 1:]] = (file, root() / file, dest / file[len(folder) + 1:])
        else:
            source = path_of(name)
            file = str(PurePosixPath(source.relative_to(root())))
            chosen[dest / source.name] = (file, source, dest / source.name)
    return list(chosen.values())


def install(dest: Path, names: list[str], force: bool = False) -> list[Placed]:
    """Copy the files ``names`` name (none: everything) into ``dest``. A different file already at a target is
    left alone and nothing is written, unless ``force``; an identical one is left as it is."""
    steps = plan(dest, names)
    conflicts = [str(target) for _, source, target in steps
                 if target.exists() and not (target.is_file() and filecmp.cmp(source, target, shallow=False))]
    if conflicts and not force:
        raise FilesError(f"{conflicts[0]}{f' (and {len(conflicts) - 1} more)' if len(conflicts) > 1 else ''} "
                         "exists and differs: nothing installed; --force replaces, or install elsewhere and compare")
    placed = []
    for name, source, target in steps:
        same = target.is_file() and filecmp.cmp(source, target, shallow=False)
        if not same:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            target.chmod(0o644)
        placed.append(Placed(name, source, target, not same))
    return placed


def unit_note(placed: list[Placed]) -> str | None:
    """What to change when units were installed but this installation is not where they run the scripts from."""
    here = str(Path(sys.executable).parent) + "/"
    if here == UNITS_EXPECT or not any(step.target.suffix == ".service" for step in placed):
        return None
    return (f"note: the units run {UNITS_EXPECT}ac-agent and {UNITS_EXPECT}ac-controller, but these scripts are in "
            f"{here}: install into /opt/agentcontroller (docs/operations.md) or change ExecStart "
            "(systemctl edit --full <unit>)")
