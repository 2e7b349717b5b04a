"""The message id counter: reserved in blocks in message_id_file, never repeating across restarts."""

import pytest

from agent.message_ids import MessageIds


def test_ids_are_consecutive_and_survive_a_restart(tmp_path):
    path = tmp_path / "message.id"
    ids = MessageIds(path, block=10)
    assert int(path.read_text()) == 11  # reserved at start: ids below 11
    assert [ids.take(1), ids.take(3), ids.take(6)] == [1, 2, 5]
    assert int(path.read_text()) == 11
    assert ids.take(1) == 11
    assert int(path.read_text()) == 22  # the next block
    again = MessageIds(path, block=10)  # a restart (or a crash) resumes after the reserved block
    assert again.take(1) == 22


def test_a_large_take_reserves_past_it(tmp_path):
    ids = MessageIds(tmp_path / "id", block=10)
    assert ids.take(25) == 1
    assert ids.take(1) == 26
    assert MessageIds(tmp_path / "id").next >= 27


def test_at_least_wins_over_an_older_file(tmp_path):
    path = tmp_path / "message.id"
    path.write_text("5\n")
    assert MessageIds(path, at_least=100).take(1) == 100
    assert MessageIds(tmp_path / "missing", at_least=7).take(1) == 7


def test_a_garbled_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "message.id"
    path.write_text("twelve")
    with pytest.raises(ValueError, match="message.id"):
        MessageIds(path)


def test_a_file_that_cannot_be_written_fails_at_start():
    with pytest.raises(OSError):
        MessageIds("/proc/no-such-folder/message.id")
