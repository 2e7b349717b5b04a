"""The real ``ac`` against a TLS-only bus with client certificates and a Redis user per client: each way of
getting TLS or the credentials wrong is one ``ac: ...`` line with what to do, and a distinct exit status."""

import pytest
from cli_support import ac, environment

from acgrid.launcher import AgentSpec, Grid


@pytest.fixture(scope="module")
def tls_grid():
    with Grid([AgentSpec(1, 1, ("web",))], tls=True, acl=True) as grid:
        yield grid


def settings(grid, **changes: str | None) -> dict[str, str]:
    files = grid.tls_files
    user, password = grid.client_user()
    values = {"AC_CA_FILE": str(files.ca), "AC_CERT_FILE": str(files.client_cert),
              "AC_KEY_FILE": str(files.client_key), "AC_USERNAME": user, "AC_PASSWORD": password, **changes}
    return environment(grid.bus_url, **{key: value for key, value in values.items() if value is not None})


def said(ran) -> str:
    assert len(ran.err_lines) == 1 and ran.err.startswith("ac: ") and not ran.out, (ran.out, ran.err)
    return ran.err_lines[0]


def test_the_right_settings_work_and_doctor_sees_tls(tls_grid):
    ran = ac(None, "agents", env=settings(tls_grid))
    assert ran.code == 0 and ran.lines[-1] == "1 agent: 1 alive, 0 dead", ran.err
    doctor = ac(None, "doctor", env=settings(tls_grid))
    found = {line.split()[1]: line for line in doctor.lines}
    assert found["tls"].startswith("ok") and "TLS in use" in found["tls"]
    assert found["config"].startswith("warn") and "refused by the ACL" in found["config"], "a client user"
    assert "as user client-" in found["reach"], "a client user may ask who it is"
    assert found["queue"].startswith("ok") and found["deadletters"].startswith("ok"), "and read the queue's depth"


def test_tls_misconfigured_is_one_line_each(tls_grid):
    plain = tls_grid.bus_url.replace("rediss://", "redis://")
    ran = ac(None, "agents", env={**settings(tls_grid), "AC_BUS": plain})
    assert ran.code == 6 and "if it speaks TLS, use rediss://" in said(ran)

    ran = ac(None, "agents", env=settings(tls_grid, AC_CA_FILE="/nowhere/ca.pem"))
    assert ran.code == 2 and said(ran) == "ac: --ca-file /nowhere/ca.pem: no such file ($AC_CA_FILE sets it too)"

    ran = ac(None, "agents", env=settings(tls_grid, AC_CA_FILE=None))
    assert ran.code == 6 and "not signed by the CA given" in said(ran) and "CERTIFICATE_VERIFY_FAILED" in ran.err

    ran = ac(None, "agents", env=settings(tls_grid, AC_CERT_FILE=None, AC_KEY_FILE=None))
    where = tls_grid.bus_url.replace("rediss://", "rediss://client-grid@")  # the user, never the password
    assert ran.code == 6 and said(ran).startswith(f"ac: TLS with the bus at {where} failed")
    assert "client certificate" in ran.err

    ran = ac(None, "agents", env=settings(tls_grid, AC_PASSWORD="wrong"))
    assert ran.code == 6 and "refused the credentials of user 'client-grid'" in said(ran)
