"""``ac-grid`` prints what to paste to use it with ``ac``: the bus, and with --acl/--tls the client user and the
certificate files; pasted as printed, ``ac agents`` works."""

import shlex
import sys
import tempfile
from pathlib import Path

from cli_support import Running, ac, ac_grid, environment

GRID = ["--agents", "1", "--acl", "--tls"]


def test_ac_grid_prints_the_settings_to_paste():
    with ac_grid(*GRID) as (lines, exports):
        assert set(exports) == {"AC_BUS", "AC_USERNAME", "AC_PASSWORD", "AC_CA_FILE", "AC_CERT_FILE", "AC_KEY_FILE"}
        assert exports["AC_BUS"].startswith("rediss://")
        assert any(line.strip().startswith(str(Path(sys.executable).parent / "ac") + " agents") for line in lines)
        pasted = {name: shlex.split(value)[0] for name, value in exports.items()}
        ran = ac(None, "agents", env=environment(None, **pasted))
        assert ran.code == 0 and ran.lines[-1] == "1 agent: 1 alive, 0 dead", ran.err


def test_the_agents_of_ac_grid_show_their_output_live():
    """As shipped (``ac-grid`` with no config): ``ac exec --follow`` prints a job's lines while it runs."""
    with ac_grid("--agents", "1") as (_, exports), tempfile.TemporaryDirectory() as folder:
        go = Path(folder) / "go"
        running = Running(exports["AC_BUS"], "exec", "-t", "1:1", "--follow", "--shell",
                          f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second")
        try:
            assert running.next_line() == "1:1: first", "live: the job still runs, waiting for the file"
            go.touch()
            assert running.next_line() == "1:1: second"
            assert running.wait() == 0
            assert not any("no live output" in line for line in running.rest("err"))
        finally:
            running.process.kill()
