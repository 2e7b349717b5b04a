"""Following a command's messages live, and reading those its agents kept, from every agent it went to."""

import json
import time
from collections.abc import Iterator
from typing import Any

from redis.exceptions import TimeoutError as BusTimeout

from acclient.cli.render import Agent
from acclient.client import Client
from acclient.cmd import FOLLOW_END, WAIT_SLICE, Cmd
from acclient.runargs import RunArgs
from protocol import keys
from protocol.states import State

Message = dict[str, Any]


class Feed:
    """The live messages and job updates of one command. Open it before the command is sent, and nothing it says
    is missed; read it with ``messages``."""

    def __init__(self, client: Client, command_id: str) -> None:
        self.command_id = command_id
        self._channel = keys.job_messages(command_id)
        self._pubsub = client._redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(self._channel, keys.job_updates(command_id))

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> "Feed":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def messages(self, cmd: Cmd, deadline: float | None, levels: frozenset[int] | None = None,
                 seen: set[tuple[Any, Any, Any]] | None = None) -> Iterator[Message]:
        """Each live message (of ``levels``; not one in ``seen``) until every job of ``cmd`` is over, or
        ``deadline`` (monotonic) passes. An agent publishes a job's messages before its final update, so once the
        jobs are over, a PING on the subscription answers after the last of them."""
        seen = seen if seen is not None else set()
        over, pinged = cmd._over_or_not(), False
        while True:
            if over and not pinged:
                self._pubsub.ping(FOLLOW_END)
                pinged = True
            wait = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
            if wait <= 0:
                return
            try:
                event = self._pubsub.get_message(timeout=wait)
            except BusTimeout:
                continue
            if event is None:
                if over is None:
                    over = cmd._over_or_not()
                continue
            if event["type"] == "pong":
                if event["data"] == FOLLOW_END.encode():
                    return
                continue
            if event["channel"].decode() != self._channel:
                if not over:  # a job update
                    over = cmd._over_or_not()
                continue
            message = json.loads(event["data"])
            key = (message.get("gid"), message.get("nid"), message.get("id"))
            if key in seen or (levels is not None and message.get("level") not in levels):
                continue
            seen.add(key)
            yield message


def ask_each(client: Client, agents: list[Agent], cmd: str, query: Any, timeout: float) -> dict[Agent, Any]:
    """Ask every agent at once; per agent, its answer (parsed JSON) or, when it could not answer, the reason
    (a ``str``: its job's data, or that it did not answer within ``timeout``)."""
    sent = {agent: client.cmd(agent[0], agent[1], cmd, RunArgs(), json.dumps(query)) for agent in agents}
    deadline = time.monotonic() + timeout
    answers: dict[Agent, Any] = {}
    for agent, asked in sent.items():
        try:
            job = asked.get_next_result(max(deadline - time.monotonic(), 0.01))
        except TimeoutError:
            answers[agent] = f"no answer within {timeout:g} s"
            continue
        if job.state == State.SUCCESS:
            answers[agent] = json.loads(job.data) if job.data else None
        else:
            answers[agent] = f"{job.data or job.state}"
    return answers


def stored_messages(client: Client, command_id: str, agents: list[Agent], levels: str, timeout: float,
                    ) -> tuple[list[Message], dict[Agent, str]]:
    """The messages of ``command_id`` kept in the DBs of ``agents`` (oldest first, each naming its agent), and
    the agents that could not say, with why."""
    answers = ask_each(client, agents, "get_msgs", {"jobid": command_id, "levels": levels, "limit": 1000}, timeout)
    found: list[Message] = []
    failed: dict[Agent, str] = {}
    for (gid, nid), answer in answers.items():
        if isinstance(answer, str):
            failed[(gid, nid)] = answer
        else:
            found += ({**message, "gid": gid, "nid": nid} for message in answer or ())
    found.sort(key=lambda message: (message.get("epoch") or 0, message.get("id") or 0))
    return found, failed
