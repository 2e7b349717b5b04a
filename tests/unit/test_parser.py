"""The output parser: tagged lines, blocks, and independence from chunking."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.parser import Message, OutputParser


def parse(data: bytes, level: int = 1, **limits) -> list[Message]:
    parser = OutputParser(level, **limits)
    return parser.feed(data) + parser.close()


def parse_in_chunks(data: bytes, cuts: list[int], level: int = 1, **limits) -> list[Message]:
    parser = OutputParser(level, **limits)
    messages, start = [], 0
    for cut in [*sorted(cuts), len(data)]:
        messages += parser.feed(data[start:cut])
        start = cut
    return messages + parser.close()


def test_untagged_lines_take_the_stream_level():
    assert parse(b"a\nb\n") == [Message(1, "a"), Message(1, "b")]
    assert parse(b"oops\n", level=2) == [Message(2, "oops")]


def test_tagged_lines():
    assert parse(b"3::hello user\n20::{\"a\": 1}\n9::disk gone\n") == [
        Message(3, "hello user"), Message(20, '{"a": 1}'), Message(9, "disk gone")]


def test_seed_block_example():
    output = b"20:::\ntotal 0\ndrwxr-xr-x 1 root root  20 Jul 15 12:40 build\n:::\n"
    assert parse(output) == [Message(20, "total 0\ndrwxr-xr-x 1 root root  20 Jul 15 12:40 build")]


def test_text_after_block_opener_is_the_first_line():
    assert parse(b"21:::first\nsecond\n:::\n") == [Message(21, "first\nsecond")]


def test_blank_lines_and_tag_lookalikes_inside_blocks_are_kept():
    assert parse(b"20:::\n\na\n\n3::not a tag here\n\n:::\n") == [Message(20, "\na\n\n3::not a tag here\n")]


def test_unterminated_block_is_emitted_at_end_of_stream():
    assert parse(b"20:::\n{\"partial\": true}\n") == [Message(20, '{"partial": true}')]
    assert parse(b"20:::\nno newline at all") == [Message(20, "no newline at all")]


def test_last_line_without_newline_is_kept():
    assert parse(b"a\n5::tail") == [Message(1, "a"), Message(5, "tail")]


def test_lookalikes_are_plain_lines():
    assert parse(b"1234::x\n::x\nx::y\n 3::x\n256::x\n") == [
        Message(1, "1234::x"), Message(1, "::x"), Message(1, "x::y"), Message(1, " 3::x"), Message(1, "256::x")]


def test_crlf_and_binary_garbage():
    assert parse(b"4::win\r\n\xff\xfe\x00bin\n") == [Message(4, "win"), Message(1, "\ufffd\ufffd\x00bin")]


def test_overlong_line_is_cut_into_pieces():
    assert parse(b"x" * 25 + b"\n", max_line_bytes=10) == [Message(1, "x" * 10), Message(1, "x" * 10),
                                                           Message(1, "x" * 5)]
    assert parse(b"y" * 20, max_line_bytes=10) == [Message(1, "y" * 10), Message(1, "y" * 10)]


def test_oversized_block_is_capped_with_a_note():
    [message] = parse(b"20:::\n" + b"abcd\n" * 10 + b":::\n", max_block_chars=12)
    assert message.level == 20
    assert message.text.startswith("abcd\nabcd\n[")
    assert "40 more characters dropped" in message.text


def test_block_closer_alone_is_a_plain_line():
    assert parse(b":::\n") == [Message(1, ":::")]


LINES = st.one_of(
    st.sampled_from(["20:::", ":::", "", "3::hi", "1::", "10::key:1|c", "21:::first", "\r", "9::boom"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n"), max_size=30),
    st.binary(max_size=20).map(lambda raw: raw.replace(b"\n", b"").decode("latin-1")),
)


@st.composite
def outputs_and_cuts(draw):
    lines = draw(st.lists(LINES, max_size=40))
    data = "\n".join(lines).encode("utf-8", "surrogateescape") + draw(st.sampled_from([b"", b"\n"]))
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=20))
    return data, cuts


@settings(max_examples=400)
@given(outputs_and_cuts(), st.sampled_from([None, 7, 64]))
def test_any_split_of_the_same_bytes_yields_the_same_messages(case, max_line):
    data, cuts = case
    limits = {"max_line_bytes": max_line} if max_line else {}
    assert parse_in_chunks(data, cuts, **limits) == parse(data, **limits)


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=10))
def test_arbitrary_bytes_never_break_the_parser(data, cuts):
    assert parse_in_chunks(data, [cut for cut in cuts if cut <= len(data)]) == parse(data)


@given(st.lists(st.sampled_from(["", "x", "  "]), min_size=1, max_size=10))
def test_blank_lines_inside_blocks_are_always_kept(lines):
    data = ("20:::\n" + "\n".join(lines) + "\n:::\n").encode()
    assert parse(data) == [Message(20, "\n".join(lines))]


@given(st.lists(st.text(alphabet="ab\r ", max_size=5), max_size=10))
def test_unterminated_blocks_are_always_emitted(lines):
    data = ("30:::\n" + "\n".join(lines)).encode()
    messages = parse(data)
    assert len(messages) == 1
    assert messages[0].level == 30


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 4096])
def test_byte_at_a_time_feeding(chunk_size):
    data = b"1::a\n20:::\nx\n\ny\n:::\nplain\n"
    cuts = list(range(chunk_size, len(data), chunk_size))
    assert parse_in_chunks(data, cuts) == [Message(1, "a"), Message(20, "x\n\ny"), Message(1, "plain")]
