"""The ``ac`` command line against a real grid."""

import json

import pytest

from acclient import cli


def ac(grid, capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--bus", grid.bus_url, *argv])
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_agents_table_and_json(grid, capsys):
    code, out, _ = ac(grid, capsys, "agents")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["AGENT", "ROLES", "HOST", "ALIVE", "RUNNING", "JOBS", "VERSION", "UPTIME", "HEARTBEAT"]
    line = next(line for line in lines if line.startswith("1:1 "))
    row = line.split()
    assert row[:2] == ["1:1", "db,web"] and row[3] == "yes" and row[4].isdigit() and row[5].isdigit()
    assert row[6] == "0.1.0" and row[7][0].isdigit() and line.endswith("s ago"), line
    code, out, _ = ac(grid, capsys, "--json", "agents")
    assert {(agent["gid"], agent["nid"]) for agent in json.loads(out)} == {(1, 1), (1, 2), (2, 1)}


def test_exec_prints_results_and_sets_the_exit_code(grid, capsys):
    code, out, _ = ac(grid, capsys, "exec", "-g", "1", "-n", "1", "--", "echo", "hello")
    assert (code, out) == (0, "== 1:1 SUCCESS (" + out.split("(")[1].split(")")[0] + ")\nhello\n")
    code, out, err = ac(grid, capsys, "exec", "-g", "1", "-n", "1", "--", "bash", "-c", "echo oops >&2; exit 4")
    assert code == 1 and "ERROR" in out and "oops" in err
    code, out, _ = ac(grid, capsys, "exec", "-g", "1", "-n", "9", "--", "true")
    assert code == 1 and "agent 1:9 is not alive" in out


def test_exec_fanout_json(grid, capsys):
    code, out, _ = ac(grid, capsys, "--json", "exec", "-r", "db", "--fanout", "--", "bash", "-c", "echo 20::$AGENT_GID")
    answer = json.loads(out)
    assert code == 0
    assert sorted((job["gid"], job["nid"], job["data"]) for job in answer["results"]) == [(1, 1, "1"), (2, 1, "2")]
    assert answer["no_reply"] == []


def test_exec_without_reply_fails(grid, capsys):
    code, _, err = ac(grid, capsys, "exec", "-g", "2", "-n", "1", "--timeout", "1", "--", "sleep", "3")
    assert code == 1 and "no reply within 1 s from: 2:1" in err


def test_jobs_and_job(grid, capsys):
    code, out, _ = ac(grid, capsys, "--json", "exec", "-g", "1", "-n", "2", "--", "echo", "listed")
    command_id = json.loads(out)["id"]
    code, out, _ = ac(grid, capsys, "jobs", "--count", "5")
    row = next(line for line in out.splitlines() if line.startswith(command_id))
    assert "execute echo listed" in row and "1:2=SUCCESS" in row
    code, out, _ = ac(grid, capsys, "job", command_id)
    assert code == 0 and out.startswith("== 1:2 SUCCESS")
    code, _, _ = ac(grid, capsys, "job", "no-such-command")
    assert code == "ac: no command no-such-command (or its results expired)"


def test_usage_errors_are_clear(grid, capsys):
    code, _, _ = ac(grid, capsys, "exec", "-g", "1", "-n", "1")
    assert code == "ac: nothing to run: ac exec [-g G -n N | -r ROLE [--fanout]] -- CMD ARGS..."
    code, _, _ = ac(grid, capsys, "exec", "-g", "1", "-n", "1", "-r", "web", "--", "true")
    assert "a command goes to one node (gid and nid) or to a role, not both" in code
