"""What a job runs: execute and templated extensions."""

import pytest

from agent.launch import Extension, Identity, execute_spec, extension_spec, template_fields
from agent.process import SpawnError
from protocol.command import Command, RunArgs

IDENTITY = Identity(2, 5, "/opt/agent")
PYTHON = Extension("execute_js_py", "python3", "/opt/scripts", ("-u", "{domain}/{name}.py", "{args}"),
                   {"EXTRA": "1"})


def command(cmd="execute", data="", **args):
    return Command("job-1", cmd, 2, 5, args=RunArgs.from_wire(args), data=data)


def test_execute_runs_the_named_binary_with_stdin_and_environment():
    spec = execute_spec(command(name="ls", args=["-l"], env={"MINE": "x"}, working_dir="/tmp"), IDENTITY)
    assert spec.argv == ("ls", "-l") and spec.cwd == "/tmp" and spec.stdin == b""
    assert {key: spec.env[key] for key in ("AGENT_GID", "AGENT_NID", "AGENT_JOBID", "AGENT_HOME", "MINE")} == {
        "AGENT_GID": "2", "AGENT_NID": "5", "AGENT_JOBID": "job-1", "AGENT_HOME": "/opt/agent", "MINE": "x"}
    with pytest.raises(SpawnError, match="execute needs args.name"):
        execute_spec(command(), IDENTITY)


def test_an_extension_fills_its_templates_from_the_run_arguments():
    spec = extension_spec(command("execute_js_py", data="{}", domain="jumpscale", name="info", args=["a", "b"]),
                          PYTHON, IDENTITY)
    assert spec.argv == ("python3", "-u", "jumpscale/info.py", "a", "b")
    assert (spec.cwd, spec.stdin, spec.env["EXTRA"], spec.env["AGENT_JOBID"]) == ("/opt/scripts", b"{}", "1", "job-1")


def test_a_missing_template_key_is_an_error_naming_it():
    with pytest.raises(SpawnError, match="run argument 'domain' is missing"):
        extension_spec(command("execute_js_py", name="info", args=[]), PYTHON, IDENTITY)


@pytest.mark.parametrize("domain", ["..", "a/b", "../etc", "x\0y", "/abs"])
def test_names_that_could_leave_the_script_folder_are_refused(domain):
    with pytest.raises(SpawnError, match="args.domain"):
        extension_spec(command("execute_js_py", domain=domain, name="x", args=[]), PYTHON, IDENTITY)


def test_an_extension_runs_in_its_own_folder():
    with pytest.raises(SpawnError, match="working_dir is not allowed"):
        extension_spec(command("execute_js_py", domain="d", name="n", args=[], working_dir="/"), PYTHON, IDENTITY)


@pytest.mark.parametrize(("template", "problem"), [
    ("{nope}", "{nope} is not a run argument"),
    ("{name.__class__}", "is not a run argument"),
    ("{name!r}", "is not a run argument"),
    ("{name:>10}", "is not a run argument"),
    ("{env}", "{env} is not a run argument"),
    ("x{args}", "{args} must be a whole element"),
    ("{name", "template '{name'"),
])
def test_bad_templates_are_named(template, problem):
    with pytest.raises(ValueError, match=None) as error:
        template_fields(template)
    assert problem in str(error.value)


def test_good_templates():
    assert template_fields("{domain}/{name}.py") == ["domain", "name"]
    assert template_fields("{args}") == ["args"]
    assert template_fields("plain") == []
