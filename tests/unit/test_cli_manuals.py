"""The shell completions and the man page of ``ac`` come from its parser: they name every subcommand and option,
the parser module imports only the standard library (the build loads it by its path), and the summary and node
sets read as docs/cli.md shows them."""

import ast
import re
import sys
from pathlib import Path

import pytest

from acclient.cli import manuals
from acclient.cli.outcomes import Summary
from acclient.cli.parser import build_parser
from acclient.cli.render import nodeset

CLI = Path(__file__).resolve().parents[2] / "acclient" / "cli"
SUBCOMMANDS = ("agents", "exec", "wait", "jobs", "job", "logs", "kill", "info", "doctor", "completion", "manpage")


@pytest.fixture(scope="module")
def generated():
    return manuals.generate(build_parser(), "0.0-test")


def test_completions_and_man_page_name_every_subcommand(generated):
    assert set(generated) == {"ac.bash", "ac.zsh", "ac.tcsh", "ac.1"}
    for name in ("ac.bash", "ac.zsh"):
        for word in (*SUBCOMMANDS, "forget", "--group", "--jsonl", "--retcode-passthrough", "--max-errors"):
            assert word in generated[name], (name, word)
    page = generated["ac.1"]
    assert page.startswith(".TH AC \"1\"") and "agentcontroller 0.0\\-test" in page
    for word in SUBCOMMANDS:
        assert re.search(rf"'ac {word}'", page), word
    assert "exit status" in page and "\\-\\-retcode\\-passthrough" in page


def test_parser_and_manuals_import_only_the_standard_library():
    for module in ("parser.py", "manuals.py"):
        tree = ast.parse((CLI / module).read_text())
        tops = {node.names[0].name.split(".")[0] for node in tree.body if isinstance(node, ast.Import)}
        tops |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
        assert tops <= set(sys.stdlib_module_names), (module, tops - set(sys.stdlib_module_names))


def test_nodesets_and_summary_lines():
    assert nodeset([(1, 3), (1, 1), (1, 2), (1, 7), (2, 4), (1, 8)]) == "1:1-3,7-8 2:4"
    summary = Summary({"succeeded": [(1, n) for n in range(1, 4)], "failed": [(1, 4)], "not alive": [(2, 1)]},
                      seconds=0.42)
    assert summary.lines() == ["summary: 5 targeted: 3 succeeded, 1 failed, 0 no reply, 1 not alive (0.4 s)",
                               "  failed (1): 1:4", "  not alive (1): 2:1"]
    assert int(summary.exit_code()) == 3
