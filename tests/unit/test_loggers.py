"""Job output through the loggers: level filters, overrides, ids, the result and the tails."""

import json

import trio
import trio.testing

from agent.config import Logger, load_config
from agent.loggers import ACLogger, Loggers
from agent.messagedb import MessageQuery
from agent.output import RunOutput, StreamTail
from protocol import envelope
from protocol.command import Command, RunArgs
from protocol.keys import AgentKeys
from protocol.levels import ALL_LEVELS
from protocol.parser import OutputParser

CONFIG = """
[main]
gid = 1
nid = 1
[controllers.main]
url = "redis://127.0.0.1:1/0"
[logging.db]
type = "DB"
log_dir = "logs"
levels = "*"
[logging.ac]
type = "AC"
levels = "4,7-9"
[logging.console]
type = "console"
levels = "9"
"""

OUTPUT = b"plain\n4::for operators\n7::careful\n10::hits:1|c\n10::not statsd\n9::broken\n20::{\"a\": 1}\n"


class FakeOutbox:
    keys = AgentKeys(1, 1)

    def __init__(self):
        self.envelopes = []

    def has_room(self, size):
        return True

    def put_bulk(self, body, jobs=()):
        self.envelopes.append(body)


def run_job(tmp_path, **run_args):
    """Feed OUTPUT (stdout) through a job's loggers; return (db messages, AC messages, the run output)."""
    (tmp_path / "agent2.toml").write_text(CONFIG)
    config = load_config(tmp_path / "agent2.toml")
    outbox = FakeOutbox()
    loggers = Loggers(config, {"main": outbox})
    loggers.open()
    command = Command("job-1", "execute", 1, 1, args=RunArgs.from_wire({"name": "x", **run_args}))
    statsd_lines = []
    output = RunOutput(loggers.for_job(command), command.args.levels(),
                       lambda line: statsd_lines.append(line) or (None if "|" in line else "statsd: bad"))
    result = {}

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(loggers.run)
            parser = OutputParser(1)
            output.add(1, parser.feed(OUTPUT))
            output.add(1, parser.close())
            await output.room()
            await loggers.flush()
            result["db"] = await loggers.database.query(MessageQuery(limit=100))
            nursery.cancel_scope.cancel()

    trio.run(main)
    ac = [json.loads(line) for body in outbox.envelopes for line in envelope.decode(body)[1].splitlines()]
    return result["db"], ac, output


def levels(messages):
    return [message["level"] for message in sorted(messages, key=lambda message: message["id"])]


def test_every_logger_gets_its_levels_with_shared_ids(tmp_path):
    db, ac, output = run_job(tmp_path)
    assert levels(db) == [1, 4, 7, 10, 10, 7, 9, 20]  # the malformed statsd line adds one warning
    assert levels(ac) == [4, 7, 7, 9]
    assert [message["id"] for message in db] == list(range(8, 0, -1))
    by_id = {message["id"]: message for message in db}
    assert all(by_id[message["id"]]["data"] == message["data"] for message in ac)
    assert ac[0] | {"data": None} == {"id": 2, "jobid": "job-1", "domain": "", "name": "x", "epoch": ac[0]["epoch"],
                                      "level": 4, "data": None}  # the controller stamps gid and nid
    assert (output.level, output.data, output.critical) == (20, '{"a": 1}', "broken")
    assert "statsd: bad" in [message["data"] for message in db]


def test_loglevels_filters_what_the_loggers_get_but_not_the_result(tmp_path):
    db, ac, output = run_job(tmp_path, loglevels="1-4,9")
    assert levels(db) == [1, 4, 9]
    assert levels(ac) == [4, 9]
    assert (output.level, output.data, output.critical) == (20, '{"a": 1}', "broken"), "as the 2015 agent did"
    assert output.streams()[0].count("\n") == 7  # the stream tail shows every line


def test_loglevels_db_and_ac_override_the_loggers(tmp_path):
    db, ac, _ = run_job(tmp_path, loglevels_db="20", loglevels_ac=[1, 10])
    assert levels(db) == [20]
    assert levels(ac) == [1, 10, 10]


def test_stream_tails_are_bounded_in_lines_and_characters():
    tail = StreamTail(max_lines=3, max_chars=10)
    for line in ["a", "b", "c", "d"]:
        tail.add(line)
    assert tail.text() == "b\nc\nd\n"
    tail.add("0123456789abcdef")
    assert tail.text() == "789abcdef\n"  # with its newline: 10 characters


def test_the_ac_logger_sends_batches_of_batch_size_and_flushes_after_flush_int():
    outbox = FakeOutbox()
    logger = ACLogger(Logger("ac", "AC", ALL_LEVELS, flush_int=5.0, batch_size=100), [outbox])
    job = ("job-1", "", "x")
    logger.add(job, 1, [(index, 4, f"m{index}") for index in range(250)])
    logger.flush()
    assert [len(envelope.decode(body)[1].splitlines()) for body in outbox.envelopes] == [100, 100, 50]
    first = json.loads(envelope.decode(outbox.envelopes[0])[1].splitlines()[0])
    assert first == {"id": 0, "jobid": "job-1", "domain": "", "name": "x", "epoch": 1, "level": 4, "data": "m0"}
    outbox.envelopes.clear()

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(logger.run)
            await trio.sleep(1)
            logger.add(job, 1, [(1, 4, "late")])
            await trio.sleep(4.9)
            assert outbox.envelopes == []  # not yet: flush_int counts from the first waiting message
            await trio.sleep(0.2)
            assert len(outbox.envelopes) == 1
            logger.add(job, 1, [(index, 4, "m") for index in range(100)])
            await trio.testing.wait_all_tasks_blocked()  # a full batch goes at once
            assert len(outbox.envelopes) == 2
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
