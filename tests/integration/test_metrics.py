"""Both daemons expose Prometheus metrics over HTTP when [metrics] listen asks for them; scraped here."""

import re
from pathlib import Path

from support import scrape, start_agent, submit, value, wait_state, wait_until

from acdaemon.run import EXIT_CONFIG
from acgrid.launcher import AgentSpec

METRICS = {"metrics": {"listen": "127.0.0.1:0"}}  # any free port
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def ours(samples: dict) -> set[str]:
    """The families of this project among the samples (a histogram's or a counter's base name)."""
    return {re.sub(r"_(bucket|count|sum|created)$", "", name) for name in samples if name.startswith("ac_")}


def addresses(grid) -> tuple[str, str]:
    """Where the controller and agent 1:1 serve metrics (the controller logs it, the agent registers it)."""
    log = grid.log_path("controller-0").read_text()
    controller = re.search(r"metrics on http://(\S+)/metrics", log).group(1)
    agents = {(agent["gid"], agent["nid"]): agent for agent in grid.client().list_agents()}
    return controller, agents[(1, 1)]["metrics"]


def test_controller_and_agent_metrics_count_what_happened(make_grid):
    grid = make_grid([AgentSpec(1, 1, ("web",), config=METRICS)], controller_config=METRICS)
    controller, agent = addresses(grid)
    client = grid.client()
    assert client.execute(1, 1, "sh", ["-c", "echo 4::one; echo 4::two; echo 4::three"]).get_next_result(30) \
        .state == "SUCCESS"
    assert client.execute(1, 1, "false").get_next_result(30).state == "ERROR"
    assert client.execute(1, 9, "true").get_next_result(30).data == "agent 1:9 is not alive"
    submit(grid.redis, b"not json at all")
    sleeper = client.execute(1, 1, "sleep", ["60"])
    wait_state(client, sleeper.id, "RUNNING")

    def controller_counted():
        samples = scrape(controller)
        done = value(samples, "ac_controller_results_total", state="SUCCESS") >= 1 and \
            value(samples, "ac_controller_results_total", state="ERROR") >= 2 and \
            value(samples, "ac_controller_dead_letters_total") == 1
        return samples if done else None

    samples = wait_until(controller_counted, what="the controller's counts")
    assert value(samples, "ac_controller_commands_routed_total") == 3  # not the refused one, not list_agents
    assert value(samples, "ac_controller_routing_seconds_count") >= 5
    assert value(samples, "ac_controller_routing_seconds_bucket", le="+Inf") == \
        value(samples, "ac_controller_routing_seconds_count")
    assert value(samples, "ac_controller_agents_alive") == 1 and value(samples, "ac_controller_agents_known") == 1
    assert value(samples, "ac_controller_jobs_running") == 1  # the sleeper
    assert value(samples, "ac_controller_bus_reconnects_total") == 0
    assert value(samples, "process_resident_memory_bytes") > 0

    samples = scrape(agent)
    assert value(samples, "ac_agent_info", gid="1", nid="1", version="0.1.0") == 1
    assert value(samples, "ac_agent_commands_total") == 3
    assert value(samples, "ac_agent_results_total", state="SUCCESS") == 1
    assert value(samples, "ac_agent_results_total", state="ERROR") == 1
    assert value(samples, "ac_agent_jobs_running") == 1 and value(samples, "ac_agent_jobs_waiting") == 0
    assert value(samples, "ac_agent_messages_logged_total") >= 3
    assert value(samples, "ac_agent_spool_envelopes", controller="main") >= 0
    assert "ac_agent_spool_bytes" in samples

    sleeper.kill()
    wait_state(client, sleeper.id, "KILLED")
    for connection in grid.redis.client_list():  # the agent's connections break: it connects again
        if connection["name"] == "ac-agent-1:1":
            grid.redis.client_kill_filter(_id=connection["id"])

    def reconnected():
        samples = scrape(agent)
        return samples if value(samples, "ac_agent_bus_reconnects_total", controller="main") >= 1 else None

    samples = wait_until(reconnected, what="the reconnection counted")
    documented = set(re.findall(r"^\| `(ac_\w+)", OPERATIONS.read_text(), re.MULTILINE))
    assert ours(scrape(controller)) | ours(samples) == documented, "docs/operations.md lists every metric"
    assert value(samples, "ac_agent_jobs_running") == 0
    assert value(samples, "ac_agent_results_total", state="KILLED") == 1
    assert client.execute(1, 1, "echo", ["back"]).get_next_result(30).state == "SUCCESS"


def test_metrics_are_off_by_default(grid):
    assert all(agent["metrics"] is None for agent in grid.client().list_agents())
    assert "metrics on" not in grid.log_path("controller-0").read_text()


def test_a_metrics_port_in_use_stops_the_agent_with_a_clear_message(make_grid):
    grid = make_grid([AgentSpec(1, 1, config=METRICS)])
    taken = grid.client().list_agents()[0]["metrics"]
    process = start_agent(grid, AgentSpec(1, 2, config={"metrics": {"listen": taken}}))
    assert process.wait(30) == EXIT_CONFIG
    assert f"ac-agent: cannot serve metrics on {taken}: Address already in use" in \
        grid.log_path("agent-1-2").read_text()
