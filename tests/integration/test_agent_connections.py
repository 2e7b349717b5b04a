"""What an agent costs Redis in connections, and what it does when Redis has no room for one more."""

import json
import time

from support import TIMEOUT, controller_command, run, start_agent, wait_until

from acgrid.echo import EchoServer
from acgrid.launcher import AgentSpec, Grid


def connections(grid: Grid, agent: str) -> list[dict]:
    return [client for client in grid.redis.client_list() if client["name"] == f"ac-agent-{agent}"]


def alive(grid: Grid, gid: int, nid: int) -> bool:
    """Whether the controllers take agent ``gid:nid`` for alive (``list_agents``)."""
    listed = json.loads(controller_command(grid.redis, "list_agents")["data"])
    return any(agent["alive"] for agent in listed if (agent["gid"], agent["nid"]) == (gid, nid))


def test_an_agent_holds_two_connections_and_a_third_only_while_it_has_a_tunnel():
    with Grid([AgentSpec(1, 1), AgentSpec(2, 1)], heartbeat_interval=0.3) as grid, EchoServer() as echo:
        assert len(connections(grid, "1:1")) == 2, "commands and intake"
        client = grid.client()
        opened = client.tunnel_open(1, 1, 0, "2.1", "127.0.0.1", echo.port)
        assert len(connections(grid, "1:1")) == 3, "its tunnel channel, subscribed while a tunnel is open"
        client.tunnel_close(1, 1, **opened)
        wait_until(lambda: len(connections(grid, "1:1")) == 2, what="the subscription given up")
        wait_until(lambda: len(connections(grid, "2:1")) == 2, what="the gateway's too")


def test_an_agent_redis_has_no_room_for_is_never_routed_to_and_comes_in_once_there_is():
    with Grid([AgentSpec(1, 1)], heartbeat_interval=0.3,
              controller_config={"agents": {"sweep_interval": 0.2}}) as grid:
        grid.stop_agent("1:1")
        wait_until(lambda: not connections(grid, "1:1"), what="the agent gone")
        wait_until(lambda: not alive(grid, 1, 1), what="the agent judged lost")
        # Room for one more connection: the agent gets its first, not its intake.
        grid.redis.config_set("maxclients", len(grid.redis.client_list()) + 1)
        try:
            start_agent(grid, grid.agent_specs["1:1"])  # no wait: it cannot register
            wait_until(lambda: len(connections(grid, "1:1")) == 1, what="the agent's first connection")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:  # what a deaf agent must never do, for a while
                assert not grid.redis.exists("ac:agent:1:1:alive"), "an agent that cannot take commands beats"
                answer = run(grid.redis, "ping", gid=1, nid=1)
                assert (answer["state"], answer["data"]) == ("ERROR", "agent 1:1 is not alive")
            assert not alive(grid, 1, 1)
        finally:
            grid.redis.config_set("maxclients", 10000)
        wait_until(lambda: run(grid.redis, "ping", gid=1, nid=1)["state"] == "SUCCESS", timeout=2 * TIMEOUT,
                   what="the agent taking commands once Redis has room")
