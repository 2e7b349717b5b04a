"""``BaseCmd`` and ``Cmd``: handles on a command sent through the controller."""

import collections
import itertools
import json
import logging
import math
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any

from redis.exceptions import TimeoutError as BusTimeout

from acclient.errors import CommandLost, NoControllerError, NoTargetError
from acclient.job import Job
from protocol import keys
from protocol.command import Command
from protocol.states import FINAL_STATES, QUEUED, Phase, State

log = logging.getLogger(__name__)

RETURNED, FAILED, NO_REPLY = "returned", "error", "no reply"
#: Longest single wait on the bus: every wait ends at its own deadline, whatever the socket timeout.
WAIT_SLICE = 1.0
#: Seconds after its own end that a wait's reply may be late before the wait counts as cut off: on a bus that
#: stops answering, a wait ends this long after its deadline at most (not a whole socket timeout later).
WAIT_SLACK = 1.0
#: Seconds a command the bus seems to have lost (its epoch changed) is given to show up again.
LOSS_GRACE = 10.0
#: Seconds a controller's key may be missing before the client says that none is alive: after a failover the
#: controllers write it on the new master a moment after a client may have found that master.
CONTROLLER_GRACE = 3.0
#: Results ``iter_results`` takes per round trip once one has arrived.
RESULTS_PER_READ = 1000
#: The oldest open commands whose results ``Client.iter_results`` looks for first, and waits on.
WINDOW = 200
#: What ``follow_msgs`` pings its subscription with, to know it has heard everything.
FOLLOW_END = "ac-follow-end"


class BaseCmd:
    """A command known by id (and the agent it ran on). Get one from
    ``Client.cmd`` or ``Client.get_by_id``."""

    def __init__(self, client: Any, id: str, gid: int | None, nid: int | None) -> None:
        self._client = client
        self._id = id
        self._gid = gid
        self._nid = nid

    id = property(lambda self: self._id, doc="Command id")
    gid = property(lambda self: self._gid, doc="Grid id")
    nid = property(lambda self: self._nid, doc="Node id")

    def get_jobs(self) -> dict[tuple[int, int], Job]:
        """Every available job result, keyed by ``(gid, nid)``; never blocks."""
        return self._client.get_cmd_jobs(self._id)

    def kill(self) -> Any:
        """Kill the command on its agent (if it is running there)."""
        gid, nid = self._agent()
        return self._client._ask(gid, nid, "kill", {"id": self._id})

    def get_stats(self) -> dict[str, Any]:
        """CPU and memory of the command's process on its agent; an error if it is not running."""
        gid, nid = self._agent()
        return self._client._ask(gid, nid, "get_process_stats", {"id": self._id})

    def get_msgs(self, levels: Any = "*", limit: int = 20) -> list[dict[str, Any]]:
        """The command's log messages from its agent's DB, newest first."""
        gid, nid = self._agent()
        return self._client.get_msgs(gid, nid, jobid=self._id, levels=levels, limit=limit)

    def _agent(self) -> tuple[int, int]:
        if not (self._gid and self._nid):
            raise NoTargetError(f"command {self._id} has no gid and nid")
        return self._gid, self._nid


class Cmd(BaseCmd):
    """A command this client sent. Results arrive in ``cmds_queue_<id>``, one per
    agent (and one per run of a recurring job)."""

    def __init__(self, client: Any, id: str, gid: int | None, nid: int | None, cmd: str, args: Any,
                 data: Any, role: str | None, fanout: bool, epoch: bytes | None = None,
                 command: Command | None = None, controller_alive: bool = True) -> None:
        super().__init__(client, id, gid, nid)
        self._epoch = epoch  # the bus's epoch token when the command was sent
        self._command = command  # as sent (None: a handle on a command sent elsewhere)
        self._controller_alive = controller_alive  # whether a controller was alive when it was sent
        self._cmd = cmd
        self._args = args
        self._data = data
        self._role = role
        self._fanout = fanout
        self._report: dict[tuple[int, int], str] = {}
        self._bus_silent = False  # the bus's last answer did not come within the socket timeout
        self._unread: collections.deque[bytes] = collections.deque()  # popped by iter_results, not yet yielded
        self._received: set[int] = set()  # hashes of the results this handle popped (see ``lost_in_transit``)
        self._last: dict[tuple[int, int], Job] = {}  # the last result taken, per agent (whichever call took it)
        self._reply_lost = False  # a wait of ours was cut off: a result the bus popped for us may be lost

    cmd = property(lambda self: self._cmd, doc="Command name")
    args = property(lambda self: self._args, doc="Command run arguments")
    data = property(lambda self: self._data, doc="Command data")
    role = property(lambda self: self._role, doc="Command role")
    fanout = property(lambda self: self._fanout, doc="Whether the command fans out to every agent of the role")

    def wire_body(self) -> str:
        """The command's JSON as ``send.lua`` takes it: without its closing brace."""
        assert self._command is not None, "a handle on a command sent elsewhere"
        return self._command.to_json()[:-1]

    def sent(self, epoch: bytes | None, controller_alive: bool) -> None:
        """What the bus said as it took the command: its epoch, whether a controller was alive."""
        self._epoch, self._controller_alive = epoch, controller_alive

    def dump(self) -> dict[str, Any]:
        """The command as a dict."""
        return {"id": self._id, "gid": self._gid, "nid": self._nid, "cmd": self._cmd,
                "args": self._args.dump() if self._args is not None else {}, "data": self._data,
                "role": self._role, "fanout": self._fanout}

    # -- results ------------------------------------------------------------------

    def get_next_result(self, timeout: float = 0) -> Job:
        """Pop the next result, waiting up to ``timeout`` seconds (0: forever).

        Each result is popped: the next call waits for the next one (another
        agent's, or another run's). Raises ``TimeoutError`` when none came in time.
        """
        raw = self._pop(timeout)
        if raw is None:
            raise TimeoutError(f"no result for command {self._id} within {timeout:g} s")
        return self._took(raw)

    get_result = get_next_result

    def noblock_get_next_result(self) -> Job | None:
        """Pop the next result if there is one; ``None`` otherwise."""
        if self._unread:
            raw = self._unread.popleft()
        else:
            raw = self._client._redis.lpop(keys.result_queue(self._id))
            if raw is None:
                return None
            self._received.add(hash(raw))
        return self._took(raw)

    def _took(self, raw: bytes) -> Job:
        """A result this handle took: ``iter_results`` then knows that its agent answered."""
        job = Job(self._client, raw)
        self._last[(job.gid or 0, job.nid or 0)] = job
        return job

    def iter_results(self, timeout: float = 0) -> Iterator[Job]:
        """Yield each result as it arrives, until every agent the command went to
        has given its last result, or ``timeout`` seconds passed (0: no limit). A
        result this handle took before (``get_next_result``) counts: the 2015
        client waited for that agent again, and so to its timeout.

        Afterwards ``report()`` says, per agent, whether it returned, failed or
        did not reply; agents that did not reply are also logged.
        """
        deadline = time.monotonic() + timeout if timeout else None
        results = _Results(self)
        while True:
            if not results.targets and not self._bus_silent:  # (a silent bus is asked by the wait alone)
                results.know(self._targets_or_none())
            if results.done:
                break
            wait = 0.0
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
            raw = self._pop(wait, RESULTS_PER_READ)
            if raw is None:
                break
            job = Job(self._client, raw)
            results.take(job)
            yield job
        results.finish(deadline)

    def _pop(self, timeout: float, batch: int = 1) -> bytes | None:
        """The next result (``None`` after ``timeout``; 0: no limit); with ``batch`` > 1, those already
        waiting come along in the same round trip and are kept for the next calls.

        It waits in slices of ``WAIT_SLICE`` seconds, whatever the connection's socket timeout, so the
        deadline is ours; between slices it looks whether the bus lost the command (``CommandLost``)."""
        if not self._unread:
            queue, redis = keys.result_queue(self._id), self._client._redis
            deadline = time.monotonic() + timeout if timeout else None
            checked = False
            while True:
                wait = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
                if wait <= 0:
                    return None
                try:
                    if not checked:  # before the first wait: what is already known to have gone wrong
                        if self._epoch in self._client._epochs_gone:  # the bus lost its data since we sent
                            self._check_not_lost(deadline)
                        if not self._controller_alive:
                            self._check_controller(deadline)
                        checked = True
                    if self._reply_lost and not self._bus_silent:  # (a silent bus is asked by the wait alone)
                        self._take_lost_in_transit()
                    if not self._unread:
                        popped, cut_off = _wait_for_one(self._client._sender, [queue], wait)
                        self._reply_lost |= cut_off
                        self._bus_silent = False
                        if popped is not None:
                            break
                        self._check_not_lost(deadline)
                    if self._unread:  # results the bus had given us and lost on the way (``lost_in_transit``)
                        return self._unread.popleft()
                except BusTimeout:  # the bus did not answer within the socket timeout: ask again, up to our deadline
                    self._bus_silent = self._reply_lost = True
                    continue
            self._unread.append(popped[1])
            if batch > 1:
                try:
                    self._unread.extend(redis.lpop(queue, batch - 1) or ())
                except BusTimeout:
                    self._bus_silent = True  # the next wait asks again
            self._received.update(map(hash, self._unread))
        return self._unread.popleft()

    def _take_lost_in_transit(self) -> None:
        """A wait of ours was cut off (the connection broke, or the bus did not answer in time): the bus may have
        popped a result for it whose reply never came. Take any such result from the job results, for the
        next pop (``lost_in_transit``)."""
        self._unread.extend(lost_in_transit(self._client._redis, [self]).get(self._id, ()))
        self._reply_lost = False

    def _targets_or_none(self) -> set[tuple[int, int]] | None:
        """``targets()``, or None when the bus did not answer in time."""
        try:
            targets = self.targets()
        except BusTimeout:
            self._bus_silent = True
            return None
        self._bus_silent = False
        return targets

    def _check_not_lost(self, deadline: float | None = None) -> None:
        """Raise ``CommandLost`` once it is clear that the bus lost this command: its epoch token changed
        since the command was sent, and no job of the command showed up again within ``LOSS_GRACE``
        (agents announce the jobs they still run within a few seconds). A command the bus still knows after
        its epoch changed may have had a result popped just before, and lost: that one is read again, for the
        next pop (``lost_in_transit``)."""
        redis, gone = self._client._redis, self._client._epochs_gone
        self._check_controller(deadline)
        epoch = redis.get(keys.BUS_EPOCH)
        if epoch == self._epoch:
            return
        if redis.exists(keys.job_results(self._id)):
            self._epoch = epoch  # known on the bus: routed since, or an agent still ran it
            self._unread.extend(lost_in_transit(redis, [self]).get(self._id, ()))
            return
        since = gone.setdefault(self._epoch, time.monotonic())  # when this client first saw that epoch gone
        if time.monotonic() - since >= LOSS_GRACE:
            raise CommandLost(self._id, failover=(epoch or b"").startswith(keys.FAILOVER_EPOCH_PREFIX.encode()))

    def _check_controller(self, deadline: float | None = None) -> None:
        """Raise ``NoControllerError`` when no controller is alive on the bus (none renewed its key lately, nor
        within ``CONTROLLER_GRACE``, nor before the caller's ``deadline``)."""
        redis, give_up = self._client._redis, time.monotonic() + CONTROLLER_GRACE
        if deadline is not None:
            give_up = min(give_up, deadline)
        while not redis.exists(keys.CONTROLLER_ALIVE):
            if time.monotonic() >= give_up:
                raise NoControllerError(self._id)
            time.sleep(0.05)  # polling: the key's arrival has no event to wait on
        self._controller_alive = True

    def progress(self) -> dict[str, int]:
        """How far the command got on its targets (a rollout's waves, a fanout's results): how many ``targets``
        in all, ``pending`` (a rollout's not started yet), ``queued``, ``running``, ``succeeded``, ``failed``
        and ``skipped``; with ``waves``, the waves of a rollout started so far. Never blocks."""
        counts = dict.fromkeys(("targets", "pending", "queued", "running", "succeeded", "failed", "skipped"), 0)
        for job in self.get_jobs().values():
            state, phase = job._data.get("state"), job._data.get("phase")
            counts["targets"] += 1
            if phase == Phase.PENDING:
                counts["pending"] += 1
            elif state == State.RUNNING or job._data.get("more"):
                counts["queued" if phase else "running"] += 1
            elif state == State.SUCCESS:
                counts["succeeded"] += 1
            elif state == State.SKIPPED:
                counts["skipped"] += 1
            else:
                counts["failed"] += 1
        rollout = self._command.rollout if self._command is not None else None
        if rollout is not None:
            started = counts["targets"] - counts["pending"] - counts["skipped"]
            counts["waves"] = math.ceil(started / rollout.wave_size(counts["targets"])) if counts["targets"] else 0
        return counts

    def report(self) -> dict[tuple[int, int], str]:
        """Per agent, after ``iter_results``: ``"returned"``, ``"error"`` or ``"no reply"``."""
        return dict(self._report)

    def wait_started(self, timeout: float = 30) -> dict[tuple[int, int], Job]:
        """Wait until the job runs (or already ended) on every agent it went to,
        without popping results: the start status of a long-running job.

        Raises ``TimeoutError`` naming the agents where it did not start in time.
        """
        deadline = time.monotonic() + timeout
        waiting: list[str] = []
        with self._client._subscribe(keys.job_updates(self._id)) as updates:
            while True:
                try:
                    jobs = self.get_jobs()
                    waiting = sorted(f"{g}:{n}" for (g, n), job in jobs.items() if job.state == QUEUED)
                    if jobs and not waiting:
                        return jobs
                except BusTimeout:
                    pass  # the bus did not answer within the socket timeout: look again, up to our deadline
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"command {self._id} did not start within {timeout:g} s on "
                                       f"{', '.join(waiting) or 'any agent (not routed yet)'}")
                try:
                    if updates.get_message(timeout=min(left, WAIT_SLICE)) is None:
                        self._check_not_lost(deadline)
                except BusTimeout:
                    continue

    def follow_msgs(self, timeout: float = 0, history: bool = False) -> Iterator[dict[str, Any]]:
        """Yield the command's messages live, as agents' AC loggers send them,
        until its jobs are over (or ``timeout`` seconds passed; 0: no limit).

        Which levels arrive is set by the agent's AC logger, or per command by
        ``RunArgs(loglevels_ac=...)``. With ``history``, first the messages
        already in the agents' DBs (oldest first), then the live ones, each once.
        Every message names its agent (``gid``, ``nid``).
        """
        deadline = time.monotonic() + timeout if timeout else None
        messages = keys.job_messages(self._id)
        seen: set[tuple[Any, Any, Any]] = set()
        with self._client._subscribe(messages, keys.job_updates(self._id)) as feed:
            if history:
                for message in self.stored_msgs():
                    seen.add((message["gid"], message["nid"], message["id"]))
                    yield message
            # An agent sends a job's messages before its final update, so once the jobs are over every
            # message has been published; a PING on the subscription answers after all of them.
            over, pinged = self._over_or_not(), False
            unsure = over is None  # the bus did not say whether the jobs are over: ask again when idle
            while True:
                if over and not pinged:
                    feed.ping(FOLLOW_END)
                    pinged = True
                wait = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
                if wait <= 0:
                    return
                try:
                    event = feed.get_message(timeout=wait)
                except BusTimeout:
                    unsure = True
                    continue
                if event is None:
                    if unsure:
                        over = self._over_or_not()
                        unsure = over is None
                    continue
                if event["type"] == "pong":
                    if event["data"] == FOLLOW_END.encode():
                        return
                    continue
                if event["channel"].decode() != messages:
                    if not over:  # a job update
                        over = self._over_or_not()
                        unsure = over is None
                    continue
                message = json.loads(event["data"])
                if (message.get("gid"), message.get("nid"), message.get("id")) not in seen:
                    yield message

    def stored_msgs(self) -> list[dict[str, Any]]:
        """The command's messages in the DBs of the agents it went to, oldest first, naming their agent."""
        stored: list[dict[str, Any]] = []
        for gid, nid in self.targets():
            if gid and nid:
                found = self._client.get_msgs(gid, nid, jobid=self._id, limit=1000)
                stored += ({**message, "gid": gid, "nid": nid} for message in found)
        return sorted(stored, key=lambda message: (message["epoch"], message["id"]))

    def _over_or_not(self) -> bool | None:
        """``_over()``; None when the bus did not answer in time."""
        try:
            return self._over()
        except BusTimeout:
            return None

    def _over(self) -> bool:
        jobs = self.get_jobs()
        return bool(jobs) and all(job._data["state"] in FINAL_STATES and not job._data.get("more")
                                  for job in jobs.values())

    def targets(self) -> set[tuple[int, int]]:
        """The agents the command went to, as ``(gid, nid)`` (empty until it is routed)."""
        fields = self._client._redis.hkeys(keys.job_results(self._id))
        return {keys.parse_agent_name(field.decode()) for field in fields}

    def _agent(self) -> tuple[int, int]:
        if self._role is not None:
            raise NoTargetError(
                f"command {self._id} went to role {self._role!r}{' (fanout)' if self._fanout else ''}, not to one "
                f"agent: take a result's gid and nid and use client.get_by_id(job.gid, job.nid, job.id)")
        return super()._agent()


class _Results:
    """What one command's results said so far: which agents it went to (fixed once routed: the controller
    writes them all at once), which of them still owe their last result."""

    def __init__(self, cmd: Cmd) -> None:
        self.cmd = cmd
        self.last = cmd._last  # what the handle took before counts: its agents have answered already
        self.targets: set[tuple[int, int]] = set()
        self.pending: set[tuple[int, int]] = set()
        # one target, known by its first result, unless it goes to many (or we do not know how it was sent)
        self.fans_out = cmd._command is None or cmd._command.fans_out
        if self.last and not self.fans_out:
            self.know(set(self.last))

    @property
    def done(self) -> bool:
        return bool(self.targets) and not self.pending

    def know(self, targets: set[tuple[int, int]] | None) -> None:
        """The targets as just read (None: the bus did not say)."""
        self.targets = targets or set()
        self.pending = {target for target in self.targets if target not in self.last or self.last[target].get("more")}

    def take(self, job: Job) -> None:
        target = (job.gid or 0, job.nid or 0)
        if not self.targets and not self.fans_out:
            self.targets, self.pending = {target}, {target}
        self.last[target] = job
        if job.get("more"):
            self.pending.add(target)
        else:
            self.pending.discard(target)

    def finish(self, deadline: float | None) -> None:
        """Write the command's ``report()``; name the agents that did not reply."""
        cmd = self.cmd
        if not self.targets and not (cmd._bus_silent and deadline is not None and time.monotonic() >= deadline):
            self.targets = cmd._targets_or_none() or set()  # (not once more from a silent bus past the deadline)
        cmd._report = {target: _verdict(self.last.get(target)) for target in self.targets | set(self.last)}
        silent = sorted(f"{gid}:{nid}" for (gid, nid), verdict in cmd._report.items() if verdict == NO_REPLY)
        if silent:
            log.warning("command %s: no reply from %s", cmd.id, ", ".join(silent))


def collect(client: Any, cmds: Sequence[Cmd], timeout: float = 0) -> Iterator[Job]:
    """The results of several commands of ``client`` as they arrive (``Client.iter_results``).

    Commands mostly end in the order they were sent (the controller routes, and agents run, first come first
    served), so the queues of the ``WINDOW`` oldest open commands are popped in one round trip, and when they
    are all empty this waits on them (``BLPOP``) rather than polling. Should they stay quiet for a while (long
    jobs first), every other open command is looked at too, once per ``WAIT_SLICE``. A bus that does not
    answer in time is asked again, up to the deadline."""
    deadline = time.monotonic() + timeout if timeout else None
    open_: dict[str, _Results] = {cmd.id: _Results(cmd) for cmd in cmds}
    redis = client._redis
    reply_lost = False  # a wait of ours was cut off: a result the bus popped for it may never have come
    silent = False  # the bus's last answer did not come in time: only a wait (bounded by the deadline) asks again
    while open_:
        try:
            window = list(itertools.islice(open_, WINDOW))
            if reply_lost and not silent:
                for command_id, bodies in lost_in_transit(redis, [results.cmd for results in open_.values()]).items():
                    yield from _take(open_, command_id, bodies)
                reply_lost = False
                continue  # (those may have been the last results)
            if not silent:
                came = yield from _take_waiting(redis, open_, window)
                if came or not all(command_id in open_ for command_id in window):  # (done once its targets were read)
                    continue
            wait = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
            if wait <= 0:
                break
            queues = [keys.result_queue(command_id) for command_id in window]
            popped, cut_off = _wait_for_one(client._sender, queues, wait)
            silent, reply_lost = False, reply_lost or cut_off
            if popped is not None:
                command_id = popped[0].decode()[len(keys.RESULT_QUEUE_PREFIX):]
                yield from _take(open_, command_id, [popped[1]])
            if popped is not None or reply_lost:
                continue
            yield from _look_further(redis, open_, window, deadline)
        except BusTimeout:  # a wait cut off, maybe: as above
            reply_lost = silent = True
            for results in open_.values():
                results.cmd._bus_silent = True
            if deadline is not None and time.monotonic() >= deadline:
                break
    for results in open_.values():
        results.finish(deadline)


def _look_further(redis: Any, open_: dict[str, "_Results"], window: list[str],
                  deadline: float | None) -> Iterator[Job]:
    """After a quiet wait: whether the bus lost the commands (an epoch change: any of them may have lost a
    result on the way), and what waits for the open commands beyond the window."""
    first = open_[window[0]].cmd
    epoch = first._epoch
    first._check_not_lost(deadline)
    if first._epoch != epoch:
        found = lost_in_transit(redis, [results.cmd for results in open_.values() if results.cmd is not first])
        if first._unread:
            found[first.id] = list(first._unread)
            first._unread.clear()
        for command_id, bodies in found.items():
            yield from _take(open_, command_id, bodies)
        return
    beyond = list(open_)[len(window):]
    for start in range(0, len(beyond), RESULTS_PER_READ):
        yield from _take_waiting(redis, open_, beyond[start:start + RESULTS_PER_READ])


def _wait_for_one(sender: Any, queues: list[str], wait: float) -> tuple[list[bytes] | None, bool]:
    """``BLPOP`` on ``queues`` for up to ``wait`` seconds: the ``(queue, result)`` popped (``None``: none came),
    and whether the wait was cut off (then sent again): a result the bus popped for it may never have come.
    A bus that does not answer in time raises ``BusTimeout``, a cut-off too."""
    cut_offs = sender.cut_offs
    popped = sender.call("BLPOP", *queues, wait, again_after_timeout=False, read_within=wait + WAIT_SLACK)
    return popped, sender.cut_offs != cut_offs


def _take_waiting(redis: Any, open_: dict[str, "_Results"], ids: list[str]) -> Generator[Job, None, int]:
    """Pop what waits for the commands ``ids`` (and the targets of fanouts not known yet) in one round trip;
    yield each result; return how many came."""
    with redis.pipeline(transaction=False) as pipe:
        for command_id in ids:
            pipe.lpop(keys.result_queue(command_id), RESULTS_PER_READ)
            if not open_[command_id].targets and open_[command_id].fans_out:
                pipe.hkeys(keys.job_results(command_id))
        replies = iter(pipe.execute())
    came = 0
    for command_id in ids:
        results = open_[command_id]
        popped = next(replies) or []
        if not results.targets and results.fans_out:
            results.know({keys.parse_agent_name(field.decode()) for field in next(replies)})
        came += len(popped)
        yield from _take(open_, command_id, popped)
    return came


def lost_in_transit(redis: Any, cmds: Sequence[Cmd]) -> dict[str, list[bytes]]:
    """Per command id, its final results that this client popped but never received.

    A client's pop whose reply was lost on the way happened all the same: on a master the sentinels then
    failed over (the pop replicated, the reply lost with the master), on a Redis killed after writing the pop
    to its append-only file, over a connection that broke in between. The bus no longer has the result in the
    command's queue, and no agent will send it again. Its job results hash still holds it (``drain.lua``
    writes the two at once), so a final result there, in no queue, that no handle here popped, is that one.
    Only commands this client sent are looked at (a handle from ``get_by_id`` does not know what was popped
    before it)."""
    mine = [cmd for cmd in cmds if cmd._command is not None]
    if not mine:
        return {}
    with redis.pipeline(transaction=True) as pipe:  # one snapshot: queue and hash as one drain left them
        for cmd in mine:
            pipe.lrange(keys.result_queue(cmd.id), 0, -1)
            pipe.hvals(keys.job_results(cmd.id))
        replies = iter(pipe.execute())
    found: dict[str, list[bytes]] = {}
    for cmd in mine:
        queued, latest = set(next(replies)), next(replies)
        lost = [body for body in latest if body not in queued and hash(body) not in cmd._received
                and json.loads(body).get("state") in FINAL_STATES]
        if lost:
            log.warning("command %s: %d results popped just before the bus failed over or our connection to it "
                        "broke never arrived; taken from its job results", cmd.id, len(lost))
            cmd._received.update(map(hash, lost))
            found[cmd.id] = lost
    return found


def _take(open_: dict[str, "_Results"], command_id: str, popped: list[bytes]) -> Iterator[Job]:
    results = open_[command_id]
    results.cmd._received.update(map(hash, popped))
    for raw in popped:
        job = Job(results.cmd._client, raw)
        results.take(job)
        yield job
    if results.done:
        results.finish(None)
        del open_[command_id]


def _verdict(job: Job | None) -> str:
    if job is None:
        return NO_REPLY
    return RETURNED if job._data.get("state") == State.SUCCESS else FAILED
