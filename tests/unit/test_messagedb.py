"""The message DB: batched inserts, get_msgs filters, retention by size and age."""

import sqlite3

import pytest

from agent.messagedb import MAX_QUERY_LIMIT, MAX_STORED_CHARS, MessageDB, MessageQuery, encode_rows

JOB_A = ("job-a", "jumpscale", "ls")
JOB_B = ("job-b", "", "bash")


@pytest.fixture
def database(tmp_path):
    db = MessageDB(tmp_path, max_bytes=1 << 30, max_age=3600)
    db.open()
    yield db
    db.close()


def fill(db, count, jobs=(JOB_A, JOB_B), epoch=1000, first_id=1):
    keys = {db.next_job_key() + index: job for index, job in enumerate(jobs)}
    rows = [(first_id + index, list(keys)[index % len(keys)], epoch + index, 1 + index % 3, f"message {index}")
            for index in range(count)]
    db.insert(encode_rows(rows), keys)
    return rows


def test_the_db_is_sqlite_in_wal_mode_with_indexes_for_the_filters(database):
    reader = sqlite3.connect(database.path)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {row[0] for row in reader.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"messages_by_job", "messages_by_epoch", "messages_by_level", "jobs_by_id"} <= indexes


def test_get_msgs_filters_newest_first(database):
    fill(database, 30)
    everything = database.query(MessageQuery(limit=100))
    assert [message["id"] for message in everything] == list(range(30, 0, -1))
    assert everything[0] == {"id": 30, "jobid": "job-b", "domain": "", "name": "bash", "epoch": 1029, "level": 3,
                             "data": "message 29"}
    of_a = database.query(MessageQuery(jobid="job-a", limit=100))
    assert {message["jobid"] for message in of_a} == {"job-a"} and len(of_a) == 15
    levels = database.query(MessageQuery(levels=frozenset({1, 3}), limit=100))
    assert {message["level"] for message in levels} == {1, 3} and len(levels) == 20
    window = database.query(MessageQuery(timefrom=1010, timeto=1012, limit=100))
    assert [message["epoch"] for message in window] == [1012, 1011, 1010]
    assert len(database.query(MessageQuery(limit=5))) == 5
    assert database.query(MessageQuery(jobid="nobody")) == []


def test_limit_is_capped_at_1000(database):
    fill(database, 1500)
    assert len(database.query(MessageQuery(limit=5000))) == MAX_QUERY_LIMIT


def test_long_data_is_cut_saying_so(database):
    keys = {database.next_job_key(): JOB_A}
    database.insert(encode_rows([(1, *keys, 1, 1, "x" * (MAX_STORED_CHARS + 10))]), keys)
    data = database.query(MessageQuery())[0]["data"]
    assert data.startswith("x" * MAX_STORED_CHARS) and data.endswith("[10 more characters cut]")


def test_unicode_and_control_characters_survive(database):
    keys = {database.next_job_key(): JOB_A}
    database.insert(encode_rows([(1, *keys, 1, 1, 'héllo "quoted" \\ \t ☃ \x1b[0m')]), keys)
    assert database.query(MessageQuery())[0]["data"] == 'héllo "quoted" \\ \t ☃ \x1b[0m'


def test_ids_and_job_keys_continue_after_reopening(tmp_path):
    db = MessageDB(tmp_path, max_bytes=1 << 30, max_age=3600)
    db.open()
    fill(db, 10)
    db.close()
    db.open()
    assert db.max_id() == 10
    assert db.next_job_key() == 3
    fill(db, 1, jobs=(JOB_A,), first_id=11)  # the same job id under a new key: found as one job
    assert len(db.query(MessageQuery(jobid="job-a", limit=100))) == 6
    db.close()


def test_messages_older_than_max_age_go(tmp_path):
    db = MessageDB(tmp_path, max_bytes=1 << 30, max_age=100)
    db.open()
    fill(db, 10, epoch=1000)
    assert db.trim_age(now=1105) == 5  # epochs 1000-1004 are more than 100 s before 1105
    remaining = [message["epoch"] for message in db.query(MessageQuery(limit=100))]
    assert min(remaining) == 1005
    db.close()


def test_the_db_stays_under_max_bytes_oldest_first(tmp_path):
    db = MessageDB(tmp_path, max_bytes=2 * 1024 * 1024, max_age=10**9)
    db.open()
    keys = {db.next_job_key(): JOB_A}
    next_id = 1
    for _ in range(20):
        rows = [(next_id + index, *keys, 10**9, 1, "y" * 500) for index in range(1000)]
        db.insert(encode_rows(rows), keys)
        next_id += 1000
        assert db.size() <= 2 * 1024 * 1024 + 600 * 1000
    ids = [message["id"] for message in db.query(MessageQuery(limit=1000))]
    assert ids[0] == next_id - 1  # the newest are kept
    assert db.trimmed > 0
    oldest = sqlite3.connect(db.path).execute("SELECT MIN(id) FROM messages").fetchone()[0]
    assert oldest > 1
    db.close()
