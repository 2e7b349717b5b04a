"""ac-controller files: what the wheel carries besides code (configs/, package data controller/shipped), listed,
shown and installed without overwriting what an operator changed."""

from pathlib import Path

import pytest

from controller import files
from controller.main import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
UNITS = ["ac-agent.service", "ac-agent@.service", "ac-controller.service"]


def test_the_listing_holds_the_units_configs_rules_and_dashboard():
    listed = files.listing()
    assert {"agent2.toml", "controller.toml", "prometheus/ac-alerts.yml", "grafana/agentcontroller.json",
            *(f"systemd/{unit}" for unit in UNITS)} <= set(listed)
    assert all((CONFIGS / name).is_file() for name in listed), "in a checkout, they are configs/ itself"
    assert files.show("ac-agent.service") == (CONFIGS / "systemd" / "ac-agent.service").read_text()
    with pytest.raises(files.FilesError, match="no shipped file 'nope'"):
        files.path_of("nope")


def test_install_puts_files_under_their_names_and_folders_under_their_paths(tmp_path):
    placed = files.install(tmp_path / "units", ["systemd"])
    assert sorted(path.name for path in (tmp_path / "units").iterdir()) == UNITS
    assert all(step.written for step in placed)
    files.install(tmp_path / "rules", ["ac-alerts.yml"])
    assert [path.name for path in (tmp_path / "rules").iterdir()] == ["ac-alerts.yml"]
    files.install(tmp_path / "all", [])
    assert sorted(str(path.relative_to(tmp_path / "all")) for path in (tmp_path / "all").rglob("*")
                  if path.is_file()) == files.listing()
    assert ((tmp_path / "all" / "systemd" / "ac-agent.service").stat().st_mode & 0o777) == 0o644


def test_install_never_overwrites_a_changed_file_unless_forced(tmp_path):
    files.install(tmp_path, ["systemd"])
    again = files.install(tmp_path, ["systemd"])
    assert not any(step.written for step in again), "identical files are left as they are"
    edited = tmp_path / "ac-agent.service"
    edited.write_text("# mine\n")
    with pytest.raises(files.FilesError, match="ac-agent.service exists and differs: nothing installed"):
        files.install(tmp_path, ["ac-agent.service", "ac-controller.service"])
    assert edited.read_text() == "# mine\n"
    forced = files.install(tmp_path, ["ac-agent.service"], force=True)
    assert [step.written for step in forced] == [True] and edited.read_text() == files.show("ac-agent.service")


def test_the_command_line(tmp_path, capsys):
    def run(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_:
            main(["files", *argv])
        out, err = capsys.readouterr()
        return exit_.value.code, out, err

    code, out, _ = run("list")
    assert code == 0 and any(line.startswith("systemd/ac-agent.service") and "/etc/systemd/system/" in line
                             for line in out.splitlines())
    code, out, _ = run("show", "controller.toml")
    assert code == 0 and out == (CONFIGS / "controller.toml").read_text()
    code, out, err = run("install", str(tmp_path), "ac-agent.service")
    assert code == 0 and out.strip() == str(tmp_path / "ac-agent.service")
    assert "note: the units run /opt/agentcontroller/bin/ac-agent" in err, "this is not that installation"
    (tmp_path / "ac-agent.service").write_text("changed")
    code, _, err = run("install", str(tmp_path), "ac-agent.service")
    assert code == 1 and "exists and differs" in err
    code, _, err = run("show", "missing.toml")
    assert code == 1 and "no shipped file 'missing.toml'" in err
