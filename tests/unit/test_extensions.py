"""The jumpscript runner and the emit helpers, run as a script would be."""

import io
import json
import subprocess
import sys

import pytest

from extensions import emit
from protocol.parser import Message, OutputParser


def parse(text: str) -> list[Message]:
    parser = OutputParser(1)
    return parser.feed(text.encode()) + parser.close()


def test_emit_round_trips_through_the_parser():
    out = io.StringIO()
    emit.message(emit.USER_MESSAGE, "one line", out)
    emit.message(emit.LOG, "two\nlines", out)
    emit.stat("hits", 2, "c", out)
    emit.result({"ok": [1, 2]}, out)
    assert parse(out.getvalue()) == [Message(3, "one line"), Message(5, "two\nlines"), Message(10, "hits:2|c"),
                                     Message(20, '{"ok": [1, 2]}')]


@pytest.fixture
def scripts(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "double.py").write_text("def action(data):\n    return {'double': data['n'] * 2}\n")
    (tmp_path / "demo" / "noaction.py").write_text("x = 1\n")
    (tmp_path / "demo" / "broken.py").write_text("def action(data):\n    raise RuntimeError('disk on fire')\n")
    return tmp_path


def run(folder, *argv, data=""):
    return subprocess.run([sys.executable, "-m", "extensions.jumpscript", *argv], cwd=folder, input=data,
                          capture_output=True, text=True, timeout=60)


def test_runner_returns_the_action_value_as_level_20(scripts):
    done = run(scripts, "demo", "double", data=json.dumps({"n": 21}))
    assert done.returncode == 0
    assert parse(done.stdout) == [Message(20, '{"double": 42}')]
    assert run(scripts, "demo", "double.py", data='{"n": 1}').returncode == 0


@pytest.mark.parametrize(("argv", "data", "problem"), [
    (("demo", "missing"), "", "no jumpscript demo/missing"),
    (("demo", "noaction"), "", "has no action(data) function"),
    (("demo", "broken"), "null", "RuntimeError: disk on fire"),
    (("demo", "double"), "{not json", "data is not JSON"),
    (("..", "double"), "", "domain: '..' is not allowed here"),
    (("demo", "../demo/double"), "", "is not allowed here"),
])
def test_runner_failures_are_critical_messages(scripts, argv, data, problem):
    done = run(scripts, *argv, data=data)
    assert done.returncode == 1
    [message] = parse(done.stdout)
    assert message.level == 9
    assert problem in message.text


def test_runner_usage():
    done = run(".", "only-one-argument")
    assert done.returncode == 1 and "usage: ac-jumpscript <domain> <name>" in done.stderr
