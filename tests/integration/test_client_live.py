"""Following a job live, and the operator commands that ask agents (logs, kill, info)."""

import json

import pytest
from support import TIMEOUT

from acclient import RunArgs, cli
from acgrid.launcher import AgentSpec, Grid

LOGGING = {"logging": {"db": {"type": "DB", "log_dir": "logs"},
                       "ac": {"type": "AC", "levels": "3-9", "flush_int": 0.2}}}


@pytest.fixture(scope="module")
def live_grid():
    with Grid([AgentSpec(1, 1, ("web",), LOGGING), AgentSpec(1, 2, ("web",), LOGGING)]) as grid:
        yield grid


def ac(grid, capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--bus", grid.bus_url, *argv])
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


SCRIPT = 'for n in 1 2 3; do echo "3::step $n"; sleep 0.2; done; echo "1::not sent to AC"; echo "7::careful"'


def test_follow_msgs_yields_messages_as_they_come_and_ends_with_the_job(live_grid):
    cmd = live_grid.client().execute(1, 1, "bash", ["-c", SCRIPT])
    followed = list(cmd.follow_msgs(timeout=TIMEOUT))
    assert [(message["level"], message["data"]) for message in followed] == \
        [(3, "step 1"), (3, "step 2"), (3, "step 3"), (7, "careful")]
    assert {(message["gid"], message["nid"], message["jobid"]) for message in followed} == {(1, 1, cmd.id)}
    assert cmd.get_next_result(TIMEOUT).state == "SUCCESS"


def test_follow_msgs_of_a_fanout_hears_every_agent(live_grid):
    cmd = live_grid.client().execute(None, None, "bash", ["-c", 'echo "4::from $AGENT_NID"'], role="web",
                                     fanout=True, args=RunArgs(loglevels_ac="4"))
    # the jobs may well have run before follow_msgs subscribed: history catches up on what was missed
    heard = [message["data"] for message in cmd.follow_msgs(timeout=TIMEOUT, history=True)]
    assert sorted(heard) == ["from 1", "from 2"]


def test_ac_logs_reads_the_db_and_follows(live_grid, capsys):
    client = live_grid.client()
    done = client.execute(1, 2, "bash", ["-c", "echo 3::first; echo 3::second"])
    done.get_next_result(TIMEOUT)
    code, out, _ = ac(live_grid, capsys, "logs", done.id)
    assert code == 0 and [line.split(None, 2)[2] for line in out.splitlines()] == ["first", "second"]
    running = client.execute(1, 2, "bash", ["-c", SCRIPT])
    code, out, _ = ac(live_grid, capsys, "--json", "logs", "-f", running.id)
    followed = [json.loads(line)["data"] for line in out.splitlines()]
    assert code == 0 and followed[-4:] == ["step 1", "step 2", "step 3", "careful"]
    assert len(followed) == len(set(followed)), "a message both in the DB and live is printed once"


def test_ac_kill_stops_a_running_job(live_grid, capsys):
    cmd = live_grid.client().execute(1, 1, "sleep", ["60"])
    cmd.wait_started(TIMEOUT)
    code, out, _ = ac(live_grid, capsys, "kill", cmd.id)
    assert (code, out) == (0, f"killed {cmd.id} on 1:1\n")
    assert cmd.get_next_result(TIMEOUT).state == "KILLED"
    code, _, err = ac(live_grid, capsys, "kill", cmd.id)
    assert code == 1 and "is not running anywhere" in err


@pytest.mark.parametrize(("kind", "expect"), [("os", "hostname"), ("mem", "total"), ("cpu", "CPU"),
                                              ("disk", "MOUNTPOINT"), ("nic", "NAME")])
def test_ac_info(live_grid, capsys, kind, expect):
    code, out, _ = ac(live_grid, capsys, "info", "1", "1", kind)
    assert code == 0 and expect in out
    code, out, _ = ac(live_grid, capsys, "--json", "info", "1", "1", kind)
    assert json.loads(out)
