"""What a previous run of the agent left, taken care of before this run takes a command.

* Processes of its jobs still running (it was killed, and took none of them
  down with it) are stopped: ``agent/reaper.py`` finds them by the identity
  in their environment.
* Long-running jobs in the state DB run again, once: the process group a
  killed run left is stopped first.
* Commands in the inflight list that it took and never answered are
  answered as this run reads that list (``answer_leftovers``): ``ERROR``,
  except a ``restart``, which did its work and only missed its answer.
"""

import json
import logging

from agent.dispatch import Dispatcher, Taken
from agent.launch import Identity
from agent.process import stop_leftover_group
from agent.reaper import stop_leftovers
from agent.statedb import StateDB
from agent.uplink import Uplink
from protocol.command import MalformedCommand, decode_command
from protocol.levels import RESULT_JSON
from protocol.states import State

log = logging.getLogger(__name__)


async def stop_left_processes(identity: Identity, grace: float) -> None:
    stopped = await stop_leftovers(identity, grace)
    if stopped:
        log.warning("stopped %d processes of jobs a previous run of this agent left running", stopped)


async def restore_long_running(state_db: StateDB, uplinks: dict[str, Uplink], dispatcher: Dispatcher,
                               grace: float) -> None:
    """Start again every long-running job of the state DB, on the uplink its command came from."""
    for saved in state_db.jobs():
        if saved.pid is not None and await stop_leftover_group(saved.pid, saved.started, grace):
            log.warning("job %s: stopped the process group %d a previous agent left running", saved.id, saved.pid)
        uplink = uplinks.get(saved.controller)
        try:
            command = decode_command(saved.command)
        except MalformedCommand as exc:
            log.error("state DB: dropping long-running job %s: %s", saved.id, exc)
            state_db.remove(saved.id)
            continue
        if uplink is None:
            log.error("state DB: dropping long-running job %s: controller %r is no longer configured", saved.id,
                      saved.controller)
            state_db.remove(saved.id)
            continue
        log.info("starting long-running job %s again", saved.id)
        uplink.hold(saved.command)
        dispatcher.start_job(command, Taken(uplink, saved.command))


def answer_leftovers(dispatcher: Dispatcher, uplink: Uplink, raws: list[bytes]) -> None:
    """Commands a previous run took from ``uplink``'s queue but never finished (long-running ones excepted)."""
    for raw in raws:
        if uplink.is_held(raw):
            continue
        uplink.hold(raw)
        taken = Taken(uplink, raw)
        try:
            command = decode_command(raw)
        except MalformedCommand:
            taken.drop()
            continue
        if command.cmd == "restart":  # it did its work; only its answer did not reach the bus in time
            job = dispatcher.job(command, State.SUCCESS, json.dumps("restarted"))
            job.level = RESULT_JSON
            taken.answer(job)
        else:
            dispatcher.refuse(taken, command, State.ERROR, "the agent restarted before this job finished "
                              "(whatever it still ran was stopped)")
