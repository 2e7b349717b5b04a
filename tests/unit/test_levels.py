import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.levels import ALL_LEVELS, MAX_LEVEL, format_levels, parse_levels


@pytest.mark.parametrize(("spec", "expected"), [
    ("*", ALL_LEVELS),
    (" * ", ALL_LEVELS),
    ("1", {1}),
    ("1,2,6-9", {1, 2, 6, 7, 8, 9}),
    (" 3 , 20-23 ", {3, 20, 21, 22, 23}),
    ("5-5", {5}),
    ([1, 2, 30], {1, 2, 30}),
    ((4,), {4}),
    ([], set()),
])
def test_parses_every_spelling(spec, expected):
    assert parse_levels(spec) == frozenset(expected)


@pytest.mark.parametrize(("spec", "problem"), [
    ("", "empty level set"),
    ("a", "'a' is not a level number"),
    ("1,,2", "'' is not a level number"),
    ("1-", "'' is not a level number"),
    ("9-6", "runs backwards"),
    ("1;2", "is not a level number"),
    ("-1", "'' is not a level number"),
    ("256", "outside 0-255"),
    ([1, "2"], "level '2' is not an integer"),
    ([True], "level True is not an integer"),
    ([-3], "outside 0-255"),
    (5, "expected '*', a string"),
    (None, "expected '*', a string"),
    ({"1": 1}, "expected '*', a string"),
])
def test_garbage_is_a_clear_error(spec, problem):
    with pytest.raises(ProtocolError, match=re.escape(problem)) as error:
        parse_levels(spec, field="args.loglevels")
    assert error.value.field == "args.loglevels"
    assert str(error.value).startswith("args.loglevels: ")


@given(st.frozensets(st.integers(0, MAX_LEVEL)))
def test_format_round_trips(levels):
    text = format_levels(levels)
    if levels:
        assert parse_levels(text) == levels
    else:
        assert text == ""
