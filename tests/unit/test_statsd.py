import pytest

from protocol.errors import ProtocolError
from protocol.statsd import StatsdSample, parse_statsd


@pytest.mark.parametrize(("line", "sample"), [
    ("load:0.5|g", StatsdSample("load", "g", 0.5)),
    ("load:+2|g", StatsdSample("load", "g", 2.0, relative=True)),
    ("load:-1.5|g", StatsdSample("load", "g", -1.5, relative=True)),
    ("hits:3|c", StatsdSample("hits", "c", 3.0)),
    ("hits:1|c|@0.5", StatsdSample("hits", "c", 2.0)),
    ("took:12.5|ms", StatsdSample("took", "ms", 12.5)),
    ("users:alice|s", StatsdSample("users", "s", "alice")),
    ("version:1.2.3|kv", StatsdSample("version", "kv", "1.2.3")),
    ("  a.b.c:1|c  ", StatsdSample("a.b.c", "c", 1.0)),
])
def test_every_type(line, sample):
    assert parse_statsd(line) == sample


@pytest.mark.parametrize(("line", "problem"), [
    ("no colon", "is not 'key:value|type'"),
    (":1|c", "is not 'key:value|type'"),
    ("key:1", "has no '|type'"),
    ("key:1|h", "unknown type 'h'"),
    ("key:abc|g", "is not a number"),
    ("key:|c", "is not a number"),
    ("key:inf|g", "must be finite"),
    ("key:1|g|@0.5", "only counters take"),
    ("key:1|c|@2", "sample rate must be in (0, 1]"),
    ("key:1|c|@x", "sample rate must be in (0, 1]"),
])
def test_malformed_lines_say_what_is_wrong(line, problem):
    with pytest.raises(ProtocolError) as error:
        parse_statsd(line)
    assert problem in str(error.value)
    assert error.value.field == "statsd"
