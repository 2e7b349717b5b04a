"""The alert rules and the dashboard in configs/: well formed, naming only metrics docs/operations.md lists (which
tests/integration/test_metrics.py holds to what the daemons serve), and the rules passing ``promtool check rules``
and ``promtool test rules`` (when each alert fires, with which labels and text)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "configs" / "prometheus" / "ac-alerts.yml"
DASHBOARD = ROOT / "configs" / "grafana" / "agentcontroller.json"
OPERATIONS = ROOT / "docs" / "operations.md"
#: Series Prometheus makes itself, which the files may name besides ours.
PROMETHEUS_OWN = {"up"}


def documented_metrics() -> set[str]:
    return set(re.findall(r"^\| `(ac_\w+)", OPERATIONS.read_text(), re.MULTILINE))


def named_metrics(expression: str) -> set[str]:
    """The metric names of a PromQL expression (ours start with ``ac_``), a histogram's series by its family."""
    names = set(re.findall(r"\b(ac_[a-z0-9_]+)", expression))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in names} | \
        {name for name in PROMETHEUS_OWN if re.search(rf"\b{name}\b(?!\s*\()", expression)}


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_every_metric_the_rules_and_the_dashboard_name_is_documented():
    documented = documented_metrics()
    assert "ac_agent_up" in documented and "ac_agent_heartbeat_age_seconds" in documented
    for expression in [rule["expr"] for rule in rules()] + dashboard_expressions():
        unknown = named_metrics(expression) - documented - PROMETHEUS_OWN
        assert not unknown, f"{expression!r} names {sorted(unknown)}, which docs/operations.md does not list"


def test_the_rules_are_well_formed_and_the_docs_list_them():
    found = rules()
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names))
    assert {"ACAgentDown", "ACControllerDown", "ACDeadLettersRising", "ACOutboxBacklog"} <= set(names)
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
    assert set(re.findall(r"^\| `(AC\w+)`", OPERATIONS.read_text(), re.MULTILINE)) == set(names)


def test_the_dashboard_is_a_grafana_dashboard_of_prometheus_queries():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    assert [variable["name"] for variable in board["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        place = panel["gridPos"]
        assert place["w"] > 0 and place["h"] > 0 and place["x"] + place["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(place["x"], place["x"] + place["w"])
                 for y in range(place["y"], place["y"] + place["h"])}
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(target["expr"] and target["refId"] for target in panel["targets"]), panel["title"]
    assert any("ac_agent_up" in expression for expression in dashboard_expressions())


def promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is needed (Debian: apt-get install prometheus)"
    return binary


def test_promtool_checks_the_rules():
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and f"SUCCESS: {len(rules())} rules found" in done.stdout, done.stdout + done.stderr


def controller(series: str, **labels: str) -> str:
    return _series(series, {"instance": labels.pop("instance", "ctl-1:9100"), "job": "ac-controller", **labels})


def agent(series: str, **labels: str) -> str:
    return _series(series, {"instance": labels.pop("instance", "web-7:9101"), "job": "ac-agent", **labels})


def _series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


NODE_7 = {"gid": "1", "nid": "7", "host": "web-7"}
NODE_8 = {"gid": "1", "nid": "8", "host": "db-8"}
#: (what, input series (series, values at 1 minute steps), minute of evaluation, alert, the alerts expected:
#: their labels and how their $value reads)
CASES = [
    ("an agent no controller sees is down after 2 minutes; one a controller still sees is not",
     [(controller("ac_agent_up", **NODE_7), "1 1 0 0 0 0"),
      (controller("ac_agent_up", instance="ctl-2:9100", **NODE_7), "1 1 0 0 0 0"),
      (controller("ac_agent_up", **NODE_8), "1 0 0 0 0 0"),
      (controller("ac_agent_up", instance="ctl-2:9100", **NODE_8), "1 1 1 1 1 1")],
     5, "ACAgentDown", [(NODE_7, "")]),
    ("not yet: down for less than 2 minutes", [(controller("ac_agent_up", **NODE_7), "1 1 1 1 0 0")], 5,
     "ACAgentDown", []),
    ("a controller that cannot be scraped", [(controller("up"), "1 0 0 0"), (controller("up", instance="ctl-2:9100"),
                                                                             "1 1 1 1")],
     3, "ACControllerDown", [({"instance": "ctl-1:9100", "job": "ac-controller"}, "")]),
    ("no controller at all", [(controller("up"), "1 0 0 0")], 3, "ACNoController", [({}, "")]),
    ("no controller ever scraped (absent() names the job)", [(agent("up"), "1 1 1 1")], 3, "ACNoController",
     [({"job": "ac-controller"}, "")]),
    ("dead letters", [(controller("ac_controller_dead_letters_total"), "0 0 0 3 3"),
                      (controller("ac_controller_dead_letters_total", instance="ctl-2:9100"), "5 5 5 5 5")],
     4, "ACDeadLettersRising", [({}, "3")]),
    ("an agent holding envelopes for 10 minutes",
     [(agent("ac_agent_spool_envelopes", controller="main"), "5000x12"),
      (agent("ac_agent_spool_envelopes", controller="main", instance="db-8:9101"), "5000x5 0x7")],
     12, "ACOutboxBacklog", [({"instance": "web-7:9101", "controller": "main"}, "5k")]),
    ("envelopes discarded", [(controller("ac_controller_envelopes_discarded_total"), "0 0 2 2")], 3,
     "ACOutboxDiscarded", [({}, "2")]),
    ("an agent ringing its bell for nothing", [(controller("ac_controller_bell_floods_total"), "0 0 1 1")], 3,
     "ACBellFlood", [({}, "1")]),
]


def rendered(template: str, labels: dict[str, str], value: str) -> str:
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda match: labels[match.group(1)], template)
    return re.sub(r"\{\{ \$value \| humanize(Duration)? \}\}", value, text)


def test_promtool_unit_tests_say_when_each_alert_fires(tmp_path):
    by_name = {rule["alert"]: rule for rule in rules()}
    assert {case[3] for case in CASES} == set(by_name), "a case for every alert"
    tests = []
    for what, series, minute, alert, expected in CASES:
        rule = by_name[alert]
        alerts = [{"exp_labels": {**labels, "severity": rule["labels"]["severity"]},
                   "exp_annotations": {key: rendered(text, labels, value)
                                       for key, text in rule["annotations"].items()}}
                  for labels, value in expected]
        tests.append({"name": what, "interval": "1m",
                      "input_series": [{"series": name, "values": values} for name, values in series],
                      "alert_rule_test": [{"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": alerts}]})
    path = tmp_path / "alerts_test.yml"  # JSON is YAML
    path.write_text(json.dumps({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}))
    done = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("expression", "names"), [
    ("max by (gid, nid, host) (ac_agent_up) == 0", {"ac_agent_up"}),
    ("histogram_quantile(0.99, sum by (le) (rate(ac_controller_routing_seconds_bucket[5m])))",
     {"ac_controller_routing_seconds"}),
    ('sum(up{job="ac-controller"}) == 0 or absent(up{job="ac-controller"})', {"up"}),
])
def test_metric_names_are_found_in_expressions(expression, names):
    assert named_metrics(expression) == names
