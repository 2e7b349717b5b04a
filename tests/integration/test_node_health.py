"""Per-node health from the controller's metrics, scraped while an agent is SIGKILLed and started again; the alert
rules and the dashboard in configs/ name only metrics the daemons really serve."""

import json
import re
import socket
import urllib.request
from pathlib import Path

import yaml
from support import TIMEOUT, scrape, value, wait_until

from acgrid.launcher import AgentSpec
from protocol import keys

METRICS = {"metrics": {"listen": "127.0.0.1:0"}}
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def exposed(address: str) -> set[str]:
    """Every metric family a daemon serves, samples or not, by its name in the exposition."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=TIMEOUT) as response:
        return set(re.findall(r"^# TYPE (\S+) ", response.read().decode(), re.MULTILINE))


def controller_address(grid) -> str:
    return re.search(r"metrics on http://(\S+)/metrics", grid.log_path("controller-0").read_text()).group(1)


def health(samples: dict, nid: int) -> tuple[float | None, float | None]:
    labels = (("gid", "1"), ("host", socket.gethostname()), ("nid", str(nid)))
    return samples.get("ac_agent_up", {}).get(labels), samples.get("ac_agent_heartbeat_age_seconds", {}).get(labels)


def test_ac_agent_up_says_which_node_is_down(make_grid):
    grid = make_grid([AgentSpec(1, 1, config=METRICS), AgentSpec(1, 2)], heartbeat_interval=0.3,
                     controller_config=METRICS)
    address = controller_address(grid)

    def both_beats_read():  # the sweep after a registration reads the heartbeat; nothing announces it
        found = scrape(address)
        return found if None not in (health(found, 1)[1], health(found, 2)[1]) else None

    samples = wait_until(both_beats_read, what="a heartbeat of each agent read")
    assert health(samples, 1)[0] == 1 and health(samples, 2)[0] == 1
    assert 0 <= health(samples, 2)[1] < TIMEOUT

    with grid.redis.pubsub(ignore_subscribe_messages=True) as events:
        events.subscribe(keys.EVENTS)
        grid.stop_agent("1:2", kill=True)
        wait_until(lambda: (message := events.get_message(timeout=1)) is not None
                   and json.loads(message["data"]) == {"event": "agent_lost", "agent": "1:2"},
                   what="agent 1:2 judged lost")
    samples = scrape(address)
    up, age = health(samples, 2)
    assert up == 0, "the SIGKILLed node is down"
    assert age is not None and age >= 0.85, "its last heartbeat is at least as old as the heartbeat's lifetime"
    assert health(samples, 1)[0] == 1, "the other node is up"
    assert value(samples, "ac_controller_agents_alive") == 1 and value(samples, "ac_controller_agents_known") == 2

    grid.start_agent("1:2")  # registered again: up at once
    up, age = health(scrape(address), 2)
    assert up == 1

    served = exposed(address) | exposed(grid.client().list_agents()[0]["metrics"]) | {"up"}
    rules = [rule for group in yaml.safe_load((CONFIGS / "prometheus" / "ac-alerts.yml").read_text())["groups"]
             for rule in group["rules"]]
    board = json.loads((CONFIGS / "grafana" / "agentcontroller.json").read_text())
    expressions = [rule["expr"] for rule in rules] + [target["expr"] for panel in board["panels"]
                                                      for target in panel.get("targets", [])]
    for expression in expressions:
        for name in re.findall(r"\b(ac_[a-z0-9_]+)", expression):
            assert name in served or re.sub(r"_bucket$", "", name) in served, f"{name} (in {expression!r})"
