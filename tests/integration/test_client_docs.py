"""docs/client.md is executed: every python block, in order, against a real grid."""

import re
import sys
from pathlib import Path

import pytest

from acgrid.launcher import AgentSpec, Grid

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_the_doc_has_the_seed_examples():
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 15
    for call in ("get_os_info", "runArgs", "getRunArgs", "max_time=-1", "wait_started", "get_next_result",
                 "get_msgs", "get_jobs", "execute_js_py", "execute_jumpscript", "get_by_id", "get_result",
                 "get_stats", "kill", "get_cmds", "iter_results"):
        assert any(call in block for block in blocks), call


@pytest.fixture(scope="module")
def docs_grid(tmp_path_factory):
    scripts = tmp_path_factory.mktemp("scripts")
    seed_style = {"binary": sys.executable, "cwd": str(scripts), "args": ["{name}"]}
    runner = {"binary": sys.executable, "cwd": str(scripts), "args": ["-m", "extensions.jumpscript", "{domain}",
                                                                     "{name}"]}
    agents = [AgentSpec(1, 1, ("web",), {"extensions": {"execute_js_py": seed_style}}),
              AgentSpec(1, 2, ("web",), {"extensions": {"execute_js_py": runner}})]
    with Grid(agents) as grid:
        yield grid, scripts


def test_every_example_runs(docs_grid):
    grid, scripts = docs_grid
    namespace = {"BUS_HOST": grid.address.host, "BUS_PORT": grid.address.port, "SCRIPTS": str(scripts),
                 "gid": 1, "nid": 1}
    for number, block in enumerate(python_blocks(DOC.read_text()), 1):
        try:
            exec(compile(block, f"docs/client.md block {number}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"docs/client.md block {number} failed:\n{block}") from exc
