"""Every validation error of a command names its field; valid commands round-trip."""

import json

import pytest

from protocol.command import (
    Command,
    MalformedCommand,
    RunArgs,
    check_path_component,
    decode_command,
    usable_id,
)
from protocol.errors import ProtocolError

BASE = {"id": "c1", "gid": 1, "nid": 2, "role": None, "fanout": False, "cmd": "execute",
        "args": {"name": "ls"}, "data": ""}


def with_(**changes):
    command = dict(BASE)
    for key, value in changes.items():
        if value is ...:
            command.pop(key, None)
        else:
            command[key] = value
    return json.dumps(command)


def with_args(**changes):
    return with_(args={"name": "ls", **changes})


MALFORMED = [
    # (raw input, field named, words of the message)
    (with_(gid="1"), "gid", "expected a positive integer or null, got a string"),
    (with_(gid=-1), "gid", "out of range"),
    (with_(gid=True), "gid", "got a boolean"),
    (with_(gid=2**40), "gid", "out of range"),
    (with_(nid=1.5), "nid", "got a number"),
    (with_(role=7, nid=None), "role", "expected a string, got an integer"),
    (with_(role="", nid=None), "role", "must be 1 to"),
    (with_(role="a", roles=["b"], nid=None), "roles", "either role or roles"),
    (with_(roles="web", nid=None), "roles", "non-empty list"),
    (with_(roles=[], nid=None), "roles", "non-empty list"),
    (with_(roles=["web", 3], nid=None), "roles[1]", "expected a string"),
    (with_(fanout="yes"), "fanout", "expected true or false"),
    (with_(cmd=...), "cmd", "missing"),
    (with_(cmd=None), "cmd", "missing"),
    (with_(cmd=["ls"]), "cmd", "expected a string, got a list"),
    (with_(cmd=""), "cmd", "must be 1 to"),
    (with_(data={"a": 1}), "data", "expected a string (JSON-encode objects first), got an object"),
    (with_(tags=5), "tags", "expected a string"),
    (with_(role="web"), "nid", "not both"),
    (with_(gid=None), "gid", "nid needs a gid"),
    (with_(nid=None, fanout=True), "fanout", "fanout needs a role"),
    (with_(nid=None), "nid", "no target"),
    (with_(gid=None, nid=None), "nid", "no target"),
    (with_(args=["ls"]), "args", "expected an object, got a list"),
    (with_args(colour="red"), "args.colour", "unknown run argument"),
    (with_args(max_time="10"), "args.max_time", "expected a number"),
    (with_args(max_time=-2), "args.max_time", "use 0 (no limit), -1 (long-running)"),
    (with_args(max_time=True), "args.max_time", "expected a number"),
    (with_args(max_time=float("nan")), "args.max_time", "expected a number"),
    (with_args(max_restart=-1), "args.max_restart", "negative"),
    (with_args(max_restart=1.5), "args.max_restart", "expected an integer"),
    (with_args(recurring_period=-5), "args.recurring_period", "negative"),
    (with_args(stats_interval=False), "args.stats_interval", "expected a number"),
    (with_args(args="-l"), "args.args", "expected a list of strings"),
    (with_args(args=["-l", 5]), "args.args[1]", "expected a string"),
    (with_args(loglevels="1,x"), "args.loglevels", "'x' is not a level number"),
    (with_args(loglevels_db=3), "args.loglevels_db", "expected '*'"),
    (with_args(loglevels_ac=["1"]), "args.loglevels_ac", "is not an integer"),
    (with_args(env=["A=1"]), "args.env", "expected an object of strings"),
    (with_args(env={"A": 1}), "args.env.A", "expected a string"),
    (with_args(env={"A=B": "1"}), "args.env.A=B", "not a valid environment variable name"),
    (with_args(domain=3), "args.domain", "expected a string"),
    (with_args(queue=["q"]), "args.queue", "expected a string"),
    (with_args(working_dir={}), "args.working_dir", "expected a string"),
]


@pytest.mark.parametrize(("raw", "field", "words"), MALFORMED)
def test_malformed_command_names_its_field(raw, field, words):
    with pytest.raises(MalformedCommand) as error:
        decode_command(raw)
    assert error.value.field == field
    assert words in str(error.value)
    assert str(error.value).startswith(f"{field}: ")
    assert error.value.command_id == "c1", "a command with a usable id can be answered"


@pytest.mark.parametrize(("raw", "field", "words"), [
    ("not json", "", "not valid JSON"),
    (b"\xff\xfe", "", "not valid JSON"),
    ("[1, 2]", "", "expected a JSON object, got a list"),
    ('"text"', "", "expected a JSON object, got a string"),
    (with_(id=...), "id", "missing"),
    (with_(id=None), "id", "missing"),
    (with_(id=12), "id", "expected a string, got an integer"),
    (with_(id=""), "id", "must be 1 to 128 characters"),
    (with_(id="x" * 129), "id", "must be 1 to 128 characters"),
    (with_(id="a\nb"), "id", "control characters"),
])
def test_input_without_usable_id_has_no_one_to_answer(raw, field, words):
    with pytest.raises(MalformedCommand) as error:
        decode_command(raw)
    assert error.value.command_id is None
    assert error.value.field == field
    assert words in str(error.value)


def test_data_over_the_limit_is_refused():
    with pytest.raises(MalformedCommand, match="data: 2001 bytes exceeds the limit of 2000"):
        decode_command(with_(data="é" * 1000 + "x"), max_data_bytes=2000)
    assert decode_command(with_(data="é" * 1000), max_data_bytes=2000).data == "é" * 1000


@pytest.mark.parametrize(("changes", "target"), [
    ({}, (1, 2, (), False)),
    ({"nid": None, "role": "web"}, (1, 0, ("web",), False)),
    ({"gid": None, "nid": None, "role": "*", "fanout": True}, (0, 0, ("*",), True)),
    ({"gid": 0, "nid": None, "roles": ["a", "b"], "role": ...}, (0, 0, ("a", "b"), False)),
    ({"fanout": ..., "role": ..., "data": ..., "args": ...}, (1, 2, (), False)),
])
def test_valid_targets(changes, target):
    command = decode_command(with_(**changes))
    assert (command.gid, command.nid, command.roles, command.fanout) == target


def test_full_command_round_trips():
    args = {"domain": "js", "name": "nginx", "args": ["-c", "x"], "max_time": -1, "max_restart": 3,
            "recurring_period": 2.5, "stats_interval": 10, "loglevels": "1,2,6-9", "loglevels_db": [1, 2],
            "loglevels_ac": "*", "queue": "q", "working_dir": "/tmp", "env": {"A": "1"}}
    raw = with_(args=args, data='{"x": 1}', tags="t", fanout=False)
    command = decode_command(raw)
    assert command.args.to_wire() == args
    assert command.args.levels() == frozenset({1, 2, 6, 7, 8, 9})
    assert command.args.levels_db() == frozenset({1, 2})
    assert decode_command(command.to_json()) == command
    roles_command = Command("r", "ping", roles=("a", "b"), fanout=True)
    assert decode_command(roles_command.to_json()) == roles_command


def test_run_args_replace_validates():
    args = RunArgs(name="ls")
    assert args.replace(max_time=5).to_wire() == {"name": "ls", "max_time": 5}
    with pytest.raises(ProtocolError, match="args.max_time"):
        args.replace(max_time="soon")
    assert RunArgs().levels() is None


def test_usable_id():
    assert usable_id("abc") == "abc"
    assert usable_id(None) is None
    assert usable_id(5) is None


@pytest.mark.parametrize("value", ["..", ".", "a/b", "/etc", "a\0b", "x..y", "..\\x", ""])
def test_path_components_that_could_escape_are_refused(value):
    with pytest.raises(ProtocolError, match="args.name"):
        check_path_component(value, "args.name")


@pytest.mark.parametrize("value", ["script", "my_script.py", "a-b.c"])
def test_plain_path_components_pass(value):
    assert check_path_component(value, "args.name") == value


def test_controller_commands_need_no_target():
    command = decode_command('{"id": "c", "cmd": "controller", "args": {"name": "list_agents"}}')
    assert (command.gid, command.nid, command.roles) == (0, 0, ())
