"""``ac-grid`` prints what to paste to use it with ``ac``: the bus, and with --acl/--tls the client user and the
certificate files; pasted as printed, ``ac agents`` works."""

import shlex
import sys
from pathlib import Path

from cli_support import ac, ac_grid, environment

GRID = ["--agents", "1", "--acl", "--tls"]


def test_ac_grid_prints_the_settings_to_paste():
    with ac_grid(*GRID) as (lines, exports):
        assert set(exports) == {"AC_BUS", "AC_USERNAME", "AC_PASSWORD", "AC_CA_FILE", "AC_CERT_FILE", "AC_KEY_FILE"}
        assert exports["AC_BUS"].startswith("rediss://")
        assert any(line.strip().startswith(str(Path(sys.executable).parent / "ac") + " agents") for line in lines)
        pasted = {name: shlex.split(value)[0] for name, value in exports.items()}
        ran = ac(None, "agents", env=environment(None, **pasted))
        assert ran.code == 0 and ran.lines[-1] == "1 agent: 1 alive, 0 dead", ran.err
