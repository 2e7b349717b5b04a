"""Several [controllers.*]: commands from the [channel] ones, logs and stats where configured."""

import json

import redis
from support import TIMEOUT

import acclient
from acgrid.launcher import AgentSpec
from acgrid.redis_server import RedisServer
from protocol import envelope, keys


def test_logs_and_stats_go_to_their_controllers_and_commands_come_from_the_channel(make_grid):
    with RedisServer() as side:
        config = {
            "controllers": {"side": {"url": side.url}},
            "channel": {"cmds": ["main"]},
            "logging": {"db": {"type": "DB", "log_dir": "logs"},
                        "ac": {"type": "AC", "flush_int": 0.1, "levels": "4", "controllers": ["side"]}},
            "stats": {"controllers": ["side"]},
        }
        grid = make_grid([AgentSpec(1, 1, config=config)], heartbeat_interval=0.3)
        client = grid.client()
        args = acclient.RunArgs(stats_interval=1)
        job = client.execute(1, 1, "bash", ["-c", "echo 4::to the side; sleep 2.5"], args=args,
                             id="sided").get_next_result(TIMEOUT)
        assert job.state == "SUCCESS"

        side_bus = redis.Redis.from_url(side.url)
        agent_keys = keys.AgentKeys(1, 1)
        kinds = {}
        for raw in side_bus.lrange(agent_keys.outbox, 0, -1):  # no controller drains the side bus here
            header, body = envelope.decode(raw)
            kinds.setdefault(header["kind"], []).append(body)
        assert set(kinds) == {"log", "stats"}  # neither registration nor results: no commands come from there
        logged = [json.loads(line) for body in kinds["log"] for line in body.splitlines()]
        assert [(message["jobid"], message["data"]) for message in logged] == [("sided", "to the side")]
        assert json.loads(kinds["stats"][0])["id"] == "sided"
        assert not side_bus.exists(agent_keys.alive)
        assert grid.redis.llen(keys.agent_logs(1, 1)) == 0  # the main controller got no log messages
        assert grid.redis.exists(agent_keys.alive)
