"""Envelopes: what an agent writes to its outbox for the controller.

An envelope is one line of header JSON, a newline, then a body kept verbatim:

    {"kind":"job","id":"<job id>","push":true,"final":true}\n<job JSON>

The controller's drain script reads only the small header (inside Redis) and
stores the body as it is, so a job JSON reaches the client byte for byte as
the agent wrote it.

Kinds and their headers:

``register``  no more fields; body: the agent's registration JSON.
``job``       ``id``, ``push`` (append to ``cmds_queue_<id>``: a run ended),
              ``final`` (the job is over: nothing more will come), ``reopen``
              (a long-running job, open again even if it was answered),
              ``state`` (with ``push``: the run's state, for the controller's
              counts); body: the job JSON.
``log``       body: message JSONs, one per line, for the controller's
              bounded per-agent log.
``stats``     ``id``; body: the job's aggregated stats JSON.
``adopt``     body: job JSONs, one per line: the jobs the agent holds, sent when it
              finds that the bus lost its data (Redis restarted empty), so that
              the controllers open them again (only jobs the bus no longer knows
              at all, and only while it is recovering from the loss).
"""

import json
from enum import StrEnum
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from protocol.errors import ProtocolError
from protocol.job import Job
from protocol.jsontext import compact
from protocol.presence import Registration


class Kind(StrEnum):
    """What an envelope carries; the drain script takes each kind its own way."""

    REGISTER = "register"
    JOB = "job"
    LOG = "log"
    STATS = "stats"
    ADOPT = "adopt"


def encode(kind: Kind, body: str, **header: Any) -> str:
    header["kind"] = kind.value
    return compact(header) + "\n" + body


def decode(raw: bytes | str) -> tuple[dict[str, Any], str]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    head, newline, body = text.partition("\n")
    if not newline:
        raise ProtocolError("envelope", "no header line")
    header = json.loads(head)
    if not isinstance(header, dict) or header.get("kind") not in Kind.__members__.values():
        raise ProtocolError("envelope.kind", f"unknown envelope header {head[:80]!r}")
    return header, body


def job_envelope(job: Job, *, push: bool, final: bool, reopen: bool = False) -> str:
    """An update of ``job``; ``push`` when a run ended, ``final`` when the job is over.

    ``reopen``: a long-running job, which lives on across agent restarts; its
    updates count even after the controller answered it (``agent lost``).
    """
    header = {"id": job.id, "push": push, "final": final}
    if push:
        header["state"] = job.state
    if reopen:
        header["reopen"] = True
    return encode(Kind.JOB, job.to_json(), **header)


def register_envelope(registration: Registration) -> str:
    return encode(Kind.REGISTER, registration.to_json())


def log_envelope(lines: list[str]) -> str:
    """Messages (each a JSON text, ``LogLines``) for the controller's bounded per-agent log, one per line."""
    return encode(Kind.LOG, "\n".join(lines))


class LogLines:
    """One job's log messages as an agent sends them: ``{"id", "jobid", "domain", "name", "epoch", "level",
    "data"}``. The controller adds ``gid`` and ``nid`` (those of the outbox it took them from), so a message
    as clients read it has all nine fields.

    A flood of messages is encoded here, so it is done with one format per message and the job's part
    encoded once: about a quarter of what encoding a dict per message costs.
    """

    __slots__ = ("_job",)

    def __init__(self, jobid: str, domain: str, name: str) -> None:
        self._job = f',"jobid":{_quote(jobid)},"domain":{_quote(domain)},"name":{_quote(name)}'

    def line(self, message_id: int, epoch: int, level: int, data: str) -> str:
        return f'{{"id":{message_id}{self._job},"epoch":{epoch},"level":{level},"data":{_quote(data)}}}'


def adopt_envelope(jobs: list[Job]) -> str:
    """The jobs an agent still holds after the bus lost its data, one job JSON per line."""
    return encode(Kind.ADOPT, "\n".join(job.to_json() for job in jobs))


def stats_envelope(job_id: str, stats: dict[str, Any]) -> str:
    return encode(Kind.STATS, compact(stats), id=job_id)
