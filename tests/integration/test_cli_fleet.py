"""``docs/cli.md`` shows real output of ``ac`` against 200 agents: this runs each block marked as run against a
200-agent swarm, and checks that ac still prints exactly that (job ids and timings aside)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import UUID, environment
from support import TIMEOUT

from acgrid.launcher import AgentSpec, Grid

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
MARK = "<!-- run against a 200-agent swarm: tests/integration/test_cli_fleet.py -->"
BLOCK = re.compile(re.escape(MARK) + r"\n```console\n(.*?)```", re.S)
TIMING = re.compile(r"\(\d+\.\d s\)")


def blocks() -> list[list[tuple[str, str]]]:
    """Each marked block as ``(command, its output)`` pairs."""
    found = []
    for body in BLOCK.findall(DOC.read_text()):
        steps: list[tuple[str, list[str]]] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        found.append([(command, "\n".join(output)) for command, output in steps])
    return found


def masked(text: str) -> str:
    return TIMING.sub("(T s)", UUID.sub("ID", text)).rstrip("\n")


@pytest.fixture(scope="module")
def swarm():
    with Grid([AgentSpec(1, 1, ("web",), swarm=200)], log_level="WARNING") as grid:
        yield grid


def run(swarm, command: str) -> tuple[int, str]:
    env = environment(swarm.bus_url, PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    done = subprocess.run(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, timeout=4 * TIMEOUT, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout


def test_the_docs_show_what_ac_prints_for_200_agents(swarm):
    found = blocks()
    assert len(found) >= 2, "the fanout with --group and the rollout"
    for block in found:
        status = 0
        for command, expected in block:
            if command == "echo $?":
                got = str(status)
            else:
                status, got = run(swarm, command)
            assert masked(got) == masked(expected), f"$ {command}\n--- docs/cli.md says:\n{expected}\n--- ac " \
                                                    f"prints:\n{got}"
