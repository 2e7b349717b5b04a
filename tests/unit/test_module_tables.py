"""The module tables of docs/agent.md and docs/controller.md name every module of their daemon, and no other."""

import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("package", "doc"), [("agent", "agent.md"), ("controller", "controller.md")])
def test_every_module_is_in_its_table(package, doc):
    text = (ROOT / "docs" / doc).read_text()
    lines = text[text.index("| module | what it does |"):].splitlines()
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines))[2:]  # past the header
    named = {name for row in rows for name in re.findall(r"`([a-z_]+\.py)`", row.split("|")[1])}
    modules = {path.name for path in (ROOT / package).glob("*.py") if not path.name.startswith("__")}
    assert named == modules
