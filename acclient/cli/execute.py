"""``ac exec`` and ``ac wait``: send a command (or take one sent earlier), show each target's result, sum up."""

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from redis.exceptions import TimeoutError as BusTimeout

from acclient.cli.app import Context, Failure
from acclient.cli.follow import Feed
from acclient.cli.ids import resolve
from acclient.cli.outcomes import (
    NOT_ALIVE,
    SKIPPED,
    Summary,
    is_agent,
    outcome,
    output_of,
    reason_of,
    record,
    remote_exit,
    stderr_of,
)
from acclient.cli.parser import Exit
from acclient.cli.render import Agent, agent_name, elapsed, nodeset, prefixed, print_json, print_jsonl, shell_words
from acclient.cmd import WAIT_SLICE, Cmd
from acclient.errors import NoControllerError
from acclient.runargs import RunArgs
from protocol import keys
from protocol.levels import parse_levels
from protocol.states import FINAL_STATES

#: Agents named as ``-t`` takes them (``1:2`` or ``1:2,1:3``): a command that starts so was meant as a target.
AGENT_LIST = re.compile(r"\d+:\d+(,\d+:\d+)*")

#: Outcomes of jobs that never ran on their agent: no run time to show.
NEVER_RAN = (NOT_ALIVE, SKIPPED)


def exec_command(context: Context) -> int:
    options = context.options
    argv = options.argv[1:] if options.argv[:1] == ["--"] else list(options.argv)
    if options.shell is not None:
        if argv:
            raise Failure("give either --shell SCRIPT or -- CMD ARGS, not both", Exit.USAGE)
        argv = ["sh", "-c", options.shell]
    if not argv:
        raise Failure("nothing to run: ac exec [-g G -n N | -t G:N | -r ROLE [--fanout] | --all] -- CMD ARGS... "
                      "(or --shell 'SCRIPT')", Exit.USAGE)
    gid, nid, role, fanout, selection = _selection(options, argv)
    levels = options.levels if options.follow or options.detach else None  # (for a later ac logs -f)
    if levels is not None:
        parse_levels(levels, "--levels")
    args = RunArgs(max_time=options.max_time, loglevels_ac=levels)
    client = context.client
    command_id = _new_id()
    feed = Feed(client, command_id) if options.follow and not options.detach else None
    with feed or contextlib.nullcontext():
        cmd = client.execute(gid, nid, argv[0], argv[1:], args=args, data=_stdin(options), id=command_id,
                             role=role, fanout=fanout, **selection)
        started = time.monotonic()
        _say(f"job {cmd.id}: {shell_words(argv)} on {_target_text(gid, nid, role, fanout, selection)}")
        if options.detach:
            print(cmd.id)
            _say(f"follow it: {context.hint()} logs -f {cmd.id}; wait for it: {context.hint()} wait {cmd.id}")
            return Exit.OK
        report = Report(context, cmd, started)
        try:
            if feed is not None:
                report.follow(feed, parse_levels(levels or "*"))
            for job in cmd.iter_results(timeout=report.left()):
                report.result(job.dump())
        except KeyboardInterrupt:
            report.interrupted()
            return Exit.INTERRUPTED
        return report.finish()


def wait_command(context: Context) -> int:
    command_id = resolve(context.client, context.options.id)
    cmd = Cmd(context.client, command_id, None, None, "", None, None, None, False)
    report = Report(context, cmd, time.monotonic())
    try:
        for job in _finals(cmd, report):
            report.result(job)
    except KeyboardInterrupt:
        report.interrupted()
        return Exit.INTERRUPTED
    return report.finish()


def _finals(cmd: Cmd, report: "Report") -> Iterator[dict[str, Any]]:
    """Each target's final job once, read from ``jobresult:<id>`` (popping nothing: what an interrupted
    ``ac exec`` popped is still there), until every target has one or the time is up."""
    done: set[Agent] = set()
    with cmd._client._subscribe(keys.job_updates(cmd.id)) as updates:
        while True:
            try:
                jobs = {agent: job.dump() for agent, job in cmd.get_jobs().items()}
            except BusTimeout:
                jobs = {}
            for agent, job in sorted(jobs.items()):
                if agent not in done and job.get("state") in FINAL_STATES and not job.get("more"):
                    done.add(agent)
                    yield job
            if jobs and len(done) == len(jobs):
                return
            left = None if report.deadline is None else report.deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            try:
                idle = updates.get_message(timeout=WAIT_SLICE if left is None else min(left, WAIT_SLICE)) is None
                if idle and not cmd._client._redis.exists(keys.CONTROLLER_ALIVE):
                    raise NoControllerError(cmd.id)
            except BusTimeout:
                continue


class Report:
    """Shows a run as the options say: each result as it comes (or folded, or JSON), a progress line, and the
    summary at the end; says what to do when it is interrupted."""

    def __init__(self, context: Context, cmd: Cmd, started: float) -> None:
        self.context = context
        self.options: argparse.Namespace = context.options
        self.cmd = cmd
        self.started = started
        self.deadline = started + self.options.timeout if self.options.timeout else None
        self.results: list[dict[str, Any]] = []
        self.followed: set[Agent] = set()  # agents whose live output came
        wanted = self.options.progress
        self.progress = (sys.stderr.isatty() if wanted is None else wanted) and not (
            self.options.json or self.options.jsonl or getattr(self.options, "follow", False))
        self._expected = 0

    def left(self) -> float:
        """Seconds left to wait (0: no limit, as ``iter_results`` takes it)."""
        if self.deadline is None:
            return 0
        return max(self.deadline - time.monotonic(), 0.001)

    def follow(self, feed: Feed, levels: frozenset[int]) -> None:
        deadline = self.deadline
        for message in feed.messages(self.cmd, deadline, levels):
            agent = (message.get("gid") or 0, message.get("nid") or 0)
            self.followed.add(agent)
            if self.options.jsonl:
                print_jsonl(message)
            else:
                prefixed(f"{agent_name(agent)}: ", str(message.get("data", "")), sys.stdout)

    def result(self, job: dict[str, Any]) -> None:
        self.results.append(job)
        options = self.options
        if options.jsonl:
            print_jsonl(record(job))
        elif not (options.json or options.group or getattr(options, "follow", False)):
            self._clear()
            show_result(job)
        if self.progress:
            self._show_progress()

    def finish(self) -> int:
        options = self.options
        try:
            jobs = {agent: job.dump() for agent, job in self.cmd.get_jobs().items()}
        except BusTimeout:
            jobs = {}
        for job in self.results:  # what was popped is the newest word, also if the bus did not answer
            jobs[(job.get("gid") or 0, job.get("nid") or 0)] = job
        summary = Summary.of(jobs, time.monotonic() - self.started)
        if self.progress:
            self._show_progress(final=True)
        if getattr(options, "follow", False) and not options.jsonl:
            self._unfollowed(jobs)
        if options.group and not (options.json or options.jsonl):
            show_groups(jobs)
        code: int = summary.exit_code()
        if options.retcode_passthrough:
            code = self._passthrough(jobs, code)
        if options.json:
            silent = [agent_name(agent) for agent in sorted(jobs) if agent not in {
                (job.get("gid") or 0, job.get("nid") or 0) for job in self.results}]
            print_json({"id": self.cmd.id, "results": [record(job) for job in self.results],
                        "summary": summary.dump(), "no_reply": silent, "exit_code": int(code)})
        else:
            for line in summary.lines():
                _say(line)
        return code

    def interrupted(self) -> None:
        self._clear()
        hint, command_id = self.context.hint(), self.cmd.id
        _say(f"ac: interrupted: job {command_id} goes on (Ctrl-C stops ac, not the job)")
        _say(f"  follow it:    {hint} logs -f {command_id}")
        _say(f"  wait for it:  {hint} wait {command_id}")
        _say(f"  kill it:      {hint} kill {command_id}")

    def _passthrough(self, jobs: dict[Agent, dict[str, Any]], code: int) -> int:
        targets = [job for agent, job in jobs.items() if is_agent(agent)]
        if len(targets) != 1:
            _say(f"ac: --retcode-passthrough needs one target, this command has {len(targets)}: exit status "
                 f"{int(code)} as without it")
            return code
        status = remote_exit(targets[0])
        return code if status is None else status

    def _unfollowed(self, jobs: dict[Agent, dict[str, Any]]) -> None:
        """The output of agents that sent nothing live (an agent with no AC logger), from their results."""
        quiet = {agent: job for agent, job in sorted(jobs.items())
                 if agent not in self.followed and is_agent(agent) and output_of(job)}
        if quiet:
            _say(f"ac: no live output came from {nodeset(quiet)} (an agent sends it only with an AC logger: "
                 "see docs/cli.md); the tail of their output:")
            for agent, job in quiet.items():
                prefixed(f"{agent_name(agent)}: ", output_of(job), sys.stdout)
        for agent, job in sorted(jobs.items()):
            reason = reason_of(job)
            if job.get("state") != "SUCCESS" and reason and is_agent(agent):
                _say(f"{agent_name(agent)}: {job.get('state')}: {reason}")

    def _show_progress(self, final: bool = False) -> None:
        done = len(self.results)
        if done >= self._expected:
            with contextlib.suppress(BusTimeout):
                self._expected = max(len(self.cmd.targets()), done)
        failed = sum(1 for job in self.results if job.get("state") != "SUCCESS")
        filled = int(30 * done / self._expected) if self._expected else 0
        line = (f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{self._expected} done, {failed} failed, "
                f"{elapsed(time.monotonic() - self.started)}")
        sys.stderr.write(f"\r\033[K{line}" + ("\n" if final else ""))
        sys.stderr.flush()

    def _clear(self) -> None:
        if self.progress:
            sys.stderr.write("\r\033[K")


def show_result(job: dict[str, Any]) -> None:
    """``== 1:1 SUCCESS (12 ms)`` (and why, when it failed), then its output; its stderr to stderr."""
    if not is_agent((job.get("gid") or 0, job.get("nid") or 0)):
        return  # the controller's refusal: the summary says it
    agent = agent_name((job.get("gid") or 0, job.get("nid") or 0))
    if job.get("state") in FINAL_STATES:
        took = f" ({job.get('time')} ms)" if job.get("time") or outcome(job) not in NEVER_RAN else ""
    else:
        took = f" (pid {job['pid']})" if job.get("pid") else ""
    reason = reason_of(job)
    print(f"== {agent} {job.get('state')}{took}{': ' + reason if reason else ''}")
    output = output_of(job)
    if output:
        print(output.rstrip("\n"))
    if stderr_of(job):
        prefixed(f"{agent}: ", stderr_of(job), sys.stderr)


def show_groups(jobs: dict[Agent, dict[str, Any]]) -> None:
    """One block per distinct (state, reason, output, stderr), naming its agents, as ``dshbak -c`` does."""
    groups: dict[tuple[str, str, str, str], list[Agent]] = {}
    for agent, job in sorted(jobs.items()):
        if not is_agent(agent):
            continue
        key = (str(job.get("state")), reason_of(job), output_of(job).rstrip("\n"), stderr_of(job).rstrip("\n"))
        groups.setdefault(key, []).append(agent)
    for (state, reason, output, stderr), agents in groups.items():
        print(f"== {nodeset(agents)} ({len(agents)}) {state}{': ' + reason if reason else ''}")
        if output:
            print(output)
        if stderr:
            prefixed("stderr: ", stderr, sys.stdout)


def _selection(options: argparse.Namespace, argv: list[str]) -> tuple[Any, Any, Any, bool, dict[str, Any]]:
    """``gid, nid, role, fanout`` and the keyword arguments of ``Client.execute`` the targeting options ask for
    (``argv``: the command, for a hint when it starts with agents and no target was given)."""
    gid, nid, role, fanout = options.gid, None, None, options.fanout
    selection: dict[str, Any] = {}
    roles = options.role or []
    targets = _agents_list(options.targets)
    if options.all:
        if roles or targets or options.nid:
            raise Failure("--all is every agent: give no -r, -t or -n with it", Exit.USAGE)
        role, fanout = "*", True
    if options.nid:
        nids = [item.strip() for item in options.nid.split(",") if item.strip()]
        if not all(item.isdigit() and int(item) > 0 for item in nids):
            hint = f" (an agent by GID:NID is -t {options.nid})" if ":" in options.nid else ""
            raise Failure(f"-n {options.nid}: expected node ids like 1 or 1,3,5{hint}", Exit.USAGE)
        if gid is None:
            raise Failure(f"-n {options.nid}: give the grid too (-g GID), or use -t GID:NID", Exit.USAGE)
        if len(nids) == 1 and not targets:
            nid = int(nids[0])
        else:
            targets += [f"{gid}:{item}" for item in nids]
            gid = None
    if targets:
        if gid is not None or roles:
            raise Failure("-t lists the agents itself: give no -g or -r with it (-x and --hosts narrow it)",
                          Exit.USAGE)
        selection["targets"] = targets
    if len(roles) == 1:
        role = roles[0]
    elif roles:
        selection["roles"] = roles
    if options.hosts:
        selection["hosts"] = options.hosts
    if options.exclude:
        selection["exclude"] = _agents_list(options.exclude)
    if options.ttl is not None:
        selection["ttl"] = options.ttl
    if options.result_ttl is not None:
        selection["result_ttl"] = options.result_ttl
    if options.tags is not None:
        selection["tags"] = options.tags
    rollout = _rollout(options)
    if rollout:
        selection["rollout"] = rollout
    if nid is None and not (targets or role or roles or options.hosts):
        hint = f" (to run it on {argv[0]}: -t {argv[0]})" if AGENT_LIST.fullmatch(argv[0]) else ""
        raise Failure("where should it run? -g G -n N, -t G:N[,...], -r ROLE [--fanout], --hosts PATTERN or --all"
                      + hint, Exit.USAGE)
    return gid, nid, role, fanout, selection


def _rollout(options: argparse.Namespace) -> dict[str, Any] | None:
    if options.batch is None:
        for given, name in ((options.batch_wait, "--batch-wait"), (options.max_errors, "--max-errors")):
            if given is not None:
                raise Failure(f"{name} belongs to a rollout: give --batch N (or N%) too", Exit.USAGE)
        return None
    rollout: dict[str, Any] = {"batch": _share(options.batch, "--batch"), "wait": options.batch_wait or 0}
    if options.max_errors is not None:
        rollout["max_errors"] = _share(options.max_errors, "--max-errors")
    return rollout


def _share(text: str, option: str) -> int | str:
    if text.endswith("%"):
        return text
    if not text.isdigit():
        raise Failure(f"{option} {text}: expected a number of targets (5) or a share of them (10%)", Exit.USAGE)
    return int(text)


def _agents_list(values: list[str] | None) -> list[str]:
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


def _target_text(gid: Any, nid: Any, role: Any, fanout: bool, selection: dict[str, Any]) -> str:
    if nid:
        return f"{gid}:{nid}"
    words = []
    if selection.get("targets"):
        words.append(f"targets {','.join(selection['targets'])}")
    if role:
        words.append("every agent" if role == "*" and fanout else f"role {role}")
    if selection.get("roles"):
        words.append(f"roles {'+'.join(selection['roles'])}")
    if selection.get("hosts"):
        words.append(f"hosts {selection['hosts']}")
    if gid:
        words.append(f"in grid {gid}")
    if selection.get("exclude"):
        words.append(f"but {','.join(selection['exclude'])}")
    if fanout and role != "*":
        words.append("(fanout)")
    if selection.get("rollout"):
        rollout = selection["rollout"]
        words.append(f"in waves of {rollout['batch']}")
    return " ".join(words)


def _stdin(options: argparse.Namespace) -> str | None:
    """``--data``, else ac's own stdin when it is a pipe or a file (not a terminal), else nothing."""
    if options.data is not None:
        return options.data
    stream = sys.stdin
    if options.no_stdin or stream is None:
        return None
    try:
        if stream.isatty():
            return None
        raw = stream.buffer.read()
    except (OSError, ValueError):
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise Failure("stdin is not UTF-8 text, and the bus carries text: encode it (base64) or give --no-stdin",
                      Exit.USAGE) from None


def _new_id() -> str:
    import uuid

    return str(uuid.uuid4())


def _say(line: str) -> None:
    print(line, file=sys.stderr)
