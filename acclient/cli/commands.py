"""The subcommands of ``ac`` that read and steer: agents, jobs, job, logs, kill, info, completion, manpage."""

import collections
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from acclient.cli import manuals
from acclient.cli.app import Context, Failure
from acclient.cli.doctor import doctor_command
from acclient.cli.execute import exec_command, show_result, wait_command
from acclient.cli.follow import Feed, ask_each, stored_messages
from acclient.cli.ids import recent, resolve
from acclient.cli.outcomes import NOT_ALIVE, Summary, is_agent, outcome
from acclient.cli.parser import Exit
from acclient.cli.render import (
    Agent,
    agent_name,
    cell,
    cut,
    duration,
    nodeset,
    prefixed,
    print_json,
    print_jsonl,
    table,
    timestamp,
)
from acclient.client import Client
from acclient.cmd import Cmd
from acclient.errors import JobError
from protocol import keys
from protocol.command import CONTROLLER_CMD
from protocol.levels import parse_levels
from protocol.states import FINAL_STATES, QUEUED, Phase, State
from protocol.targets import Rollout

#: Commands that ask something rather than run something: ``ac jobs`` hides them unless ``--all``.
QUERIES = frozenset({CONTROLLER_CMD, "get_msgs", "kill", "get_process_stats", "get_processes_stats", "get_cpu_info",
                     "get_mem_info", "get_disk_info", "get_nic_info", "get_os_info", "hubble_list_tunnels"})


def agents_command(context: Context) -> int:
    options = context.options
    agents = context.client.list_agents(role=options.role, alive=options.alive)
    if options.json:
        print_json(agents)
        return Exit.OK
    if options.jsonl:
        for agent in agents:
            print_jsonl(agent)
        return Exit.OK
    now = time.time()
    table(["AGENT", "ROLES", "HOST", "ALIVE", "RUNNING", "JOBS", "VERSION", "UPTIME", "HEARTBEAT"],
          [[f"{a['gid']}:{a['nid']}", ",".join(a["roles"]), a.get("hostname") or "", "yes" if a["alive"] else "no",
            a["running"], a.get("jobs"), a.get("version") or "", duration(a.get("uptime")),
            duration(now - a["last_heartbeat"] / 1000, " ago") if a.get("last_heartbeat") else ""]
           for a in agents])
    alive = sum(1 for agent in agents if agent["alive"])
    chosen = " ".join(word for word in (f"role {options.role}" if options.role else "",
                                         {True: "alive", False: "dead"}.get(options.alive, "")) if word)
    print(f"{len(agents)} agent{'' if len(agents) == 1 else 's'}{' (' + chosen + ')' if chosen else ''}: {alive} "
          f"alive, {len(agents) - alive} dead")
    return Exit.OK


def forget_command(context: Context) -> int:
    code: int = Exit.OK
    for name in context.options.agents:
        try:
            answer = context.client._ask(None, None, CONTROLLER_CMD, {"agent": name}, name="forget_agent")
            print(f"forgot {answer.get('forgotten', name)}")
        except Exception as exc:  # one line per agent, and on to the next
            from acclient.cli.app import explain

            failure = explain(exc, context.options)
            if failure is None:
                raise
            print(f"ac: {name}: {_job_error_text(failure)}", file=sys.stderr)
            code = max(code, failure.code)
    return code


def jobs_command(context: Context) -> int:
    options, redis = context.options, context.client._redis
    now_ms = _bus_ms(context)
    shown: list[dict[str, Any]] = []
    start = 0
    while len(shown) < options.count and start < 5000:
        page = recent(context.client, 200, start)
        if not page:
            break
        start += len(page)
        shown += [command for command in page if options.all or command.get("cmd") not in QUERIES]
    shown = shown[:options.count]
    with redis.pipeline(transaction=False) as pipe:
        for command in shown:
            pipe.hgetall(keys.job_results(command["id"]))
        hashes = pipe.execute()
    rows = []
    for command, results in zip(shown, hashes, strict=True):
        jobs = [json.loads(raw) for raw in results.values()]
        command["states"] = dict(collections.Counter(_state(job) for job in jobs))
        refusal = next((job.get("data") for job in jobs if not job.get("nid") and job.get("state") == State.ERROR),
                       None)
        age = duration((now_ms - command["queued"]) / 1000, " ago") if command.get("queued") else ""
        states = f"refused: {refusal}" if refusal else ", ".join(f"{state} {count}" for state, count in
                                                                sorted(command["states"].items()))
        rows.append([command["id"], age, cut(_target(command), 28), cut(_words(command), 40), cut(states, 60)])
    if options.json:
        print_json(shown)
    elif options.jsonl:
        for command in shown:
            print_jsonl(command)
    else:
        table(["ID", "AGE", "TARGET", "COMMAND", "STATES"], rows)
    return Exit.OK


def job_command(context: Context) -> int:
    options, client = context.options, context.client
    command_id = resolve(client, options.id)
    jobs = {agent: job.dump() for agent, job in sorted(client.get_cmd_jobs(command_id).items())}
    if not jobs:
        raise Failure(f"no command {command_id} (or its results expired)", Exit.USAGE)
    summary = Summary.of(jobs)
    progress = _rollout_progress(context, command_id, jobs)
    if options.json or options.jsonl:
        document = {"id": command_id, "jobs": {agent_name(agent): job for agent, job in jobs.items()},
                    "summary": summary.dump(), "rollout": progress, "exit_code": int(summary.exit_code())}
        print_json(document) if options.json else print_jsonl(document)
        return summary.exit_code()
    for job in jobs.values():
        show_result(job)
    if progress:
        print(f"rollout: {progress['waves']} waves started ({progress['batch']} targets each), {progress['failed']} "
              f"failed so far (max_errors {progress['max_errors']}), {progress['pending']} waiting for their wave, "
              f"{progress['skipped']} skipped", file=sys.stderr)
    for line in summary.lines(timed=False):
        print(line, file=sys.stderr)
    return summary.exit_code()


def logs_command(context: Context) -> int:
    options, client = context.options, context.client
    command_id = resolve(client, options.id)
    levels = parse_levels(options.levels, "--levels")
    cmd = Cmd(client, command_id, None, None, "", None, None, None, False)
    agents = sorted(agent for agent in cmd.targets() if is_agent(agent))
    if not agents:
        raise Failure(f"command {command_id} ran on no agent (or its results expired)", Exit.USAGE)
    code: int = Exit.OK
    with Feed(client, command_id) if options.follow else _Nothing() as feed:
        messages, failed = stored_messages(client, command_id, agents, options.levels, options.timeout)
        code = _report_unreadable(cmd, failed)
        for message in messages:
            _show_message(message, options)
        if feed is not None:
            seen = {(message["gid"], message["nid"], message.get("id")) for message in messages}
            stored = set(seen)
            for message in feed.messages(cmd, None, levels, seen):
                _show_message(message, options)
            # an agent that sent nothing live has no AC logger: what it kept meanwhile is read from its DB
            live = {(gid, nid) for gid, nid, _ in seen - stored}
            silent = [agent for agent in agents if agent not in live and agent not in failed]
            later, _ = stored_messages(client, command_id, silent, options.levels, options.timeout) if silent \
                else ([], {})
            for message in later:
                if (message["gid"], message["nid"], message.get("id")) not in seen:
                    _show_message(message, options)
    return code


def kill_command(context: Context) -> int:
    """Kill the command on every agent where it has not ended; one line per agent saying what became of it."""
    options, client = context.options, context.client
    command_id = resolve(client, options.id)
    jobs = {agent: job.dump() for agent, job in sorted(client.get_cmd_jobs(command_id).items()) if is_agent(agent)}
    if not jobs:
        raise Failure(f"command {command_id} ran on no agent (or its results expired)", Exit.USAGE)
    running = [agent for agent, job in jobs.items() if job.get("state") not in FINAL_STATES or job.get("more")]
    if not running:
        ended = ", ".join(f"{agent_name(agent)} {job.get('state')}" for agent, job in jobs.items())
        raise Failure(f"command {command_id} is not running anywhere: {cut(ended, 200)}", Exit.FAILED)
    pending = [agent for agent in running if jobs[agent].get("phase") == Phase.PENDING]
    stopped = _stop_rollout(client, command_id, options.timeout) if pending else ""
    after_stop = client.get_cmd_jobs(command_id) if pending and not stopped else {}
    asked = ask_each(client, [agent for agent in running if agent not in pending], "kill", {"id": command_id},
                     options.timeout)
    code: int = Exit.OK
    for agent, job in jobs.items():
        name = agent_name(agent)
        if agent in pending:
            now = after_stop.get(agent)
            if now is not None and now.state == State.SKIPPED:
                print(f"{command_id} not started on {name}: its rollout was stopped (SKIPPED)")
            else:
                why = stopped or "its wave started meanwhile"
                print(f"{command_id} not stopped on {name} (it waited for its rollout wave): {why}")
                code = max(code, Exit.FAILED)
        elif agent not in asked:
            print(f"{command_id} had already ended on {name}: {job.get('state')}")
        elif not isinstance(asked[agent], str):
            print(f"killed {command_id} on {name}")
        else:
            why = asked[agent]
            now = client.get_cmd_jobs(command_id).get(agent)
            if now is not None and now.state in FINAL_STATES:
                print(f"{command_id} had already ended on {name}: {now.state}")
                continue
            print(f"{command_id} not killed on {name}: {why}")
            code = max(code, Exit.NOT_ALIVE if outcome({"state": "ERROR", "data": why, "nid": 1}) == NOT_ALIVE
                       else Exit.FAILED)
    return code


def _stop_rollout(client: Client, command_id: str, timeout: float) -> str:
    """Stop the rollout's later waves; what went wrong, or "" when it was stopped."""
    try:
        client.stop_rollout(command_id, timeout)
    except JobError as exc:
        return str(exc)
    except TimeoutError:
        return "the controller did not answer rollout_stop in time"
    return ""


def info_command(context: Context) -> int:
    options = context.options
    answer = getattr(context.client, f"get_{options.kind}_info")(options.gid, options.nid)
    if options.json or options.jsonl:
        print_json(answer) if options.json else print_jsonl(answer)
    elif isinstance(answer, list) and answer and isinstance(answer[0], dict):
        columns = list(answer[0])
        table([column.upper() for column in columns], [[cell(row.get(c)) for c in columns] for row in answer])
    elif isinstance(answer, dict):
        width = max(map(len, answer), default=0)
        for key, value in answer.items():
            print(f"{key:<{width}}  {cell(value)}")
    else:
        print(answer)
    return Exit.OK


def completion_command(context: Context) -> int:
    sys.stdout.write(manuals.shipped(manuals.completion_name(context.options.shell)))
    return Exit.OK


def manpage_command(context: Context) -> int:
    sys.stdout.write(manuals.shipped(manuals.MANPAGE))
    return Exit.OK


COMMANDS: dict[str, Callable[[Context], int]] = {
    "agents": agents_command, "agents-forget": forget_command, "exec": exec_command, "wait": wait_command,
    "jobs": jobs_command, "job": job_command, "logs": logs_command, "kill": kill_command, "info": info_command,
    "doctor": doctor_command, "completion": completion_command, "manpage": manpage_command,
}


# -- helpers ---------------------------------------------------------------------------------------------


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


def _report_unreadable(cmd: Cmd, failed: dict[Agent, str]) -> int:
    code: int = Exit.OK
    for agent, why in sorted(failed.items()):
        print(f"ac: {agent_name(agent)}: its messages cannot be read: {why}", file=sys.stderr)
        dead = outcome({"state": "ERROR", "data": why, "nid": 1}) == NOT_ALIVE
        code = max(code, Exit.NOT_ALIVE if dead else Exit.NO_REPLY if why.startswith("no answer") else Exit.FAILED)
    return code


def _show_message(message: dict[str, Any], options: Any) -> None:
    if options.json or options.jsonl:
        print_jsonl(message)
        return
    agent = agent_name((message.get("gid") or 0, message.get("nid") or 0))
    when = timestamp(message.get("epoch"), options.utc).replace(" ", "T")
    prefixed(f"{when} {agent}[{message.get('level')}]: ", str(message.get("data", "")), sys.stdout)


def _rollout_progress(context: Context, command_id: str, jobs: dict[Agent, dict[str, Any]]) -> dict[str, Any] | None:
    command = next((entry for entry in recent(context.client, 2000) if entry.get("id") == command_id), None)
    if not command or not command.get("rollout"):
        return None
    rollout = Rollout.from_wire(command["rollout"])
    targets = [job for agent, job in jobs.items() if is_agent(agent)]
    pending = sum(1 for job in targets if job.get("phase") == Phase.PENDING)
    skipped = sum(1 for job in targets if job.get("state") == State.SKIPPED)
    failed = sum(1 for job in targets if job.get("state") in FINAL_STATES
                 and job.get("state") not in (State.SUCCESS, State.SKIPPED))
    started = len(targets) - pending - skipped
    size = rollout.wave_size(len(targets))
    budget = rollout.error_budget(len(targets))
    return {"waves": -(-started // size) if targets else 0, "batch": size, "failed": failed, "pending": pending,
            "skipped": skipped, "max_errors": "none" if budget == float("inf") else int(budget)}


def _bus_ms(context: Context) -> int:
    try:
        seconds, micros = context.client._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000
    except Exception:  # a client user may not ask the bus's time: ours will do
        return int(time.time() * 1000)


def _state(job: dict[str, Any]) -> str:
    return QUEUED if job.get("state") == State.RUNNING and job.get("phase") else str(job.get("state"))


def _target(command: dict[str, Any]) -> str:
    if command.get("cmd") == CONTROLLER_CMD:
        return "controller"
    if command.get("targets"):
        text = nodeset(tuple(int(part) for part in name.split(":")) for name in command["targets"])  # type: ignore[misc]
    elif command.get("nid"):
        return f"{command.get('gid')}:{command.get('nid')}"
    else:
        roles = command.get("role") or "+".join(command.get("roles") or [])
        text = "every agent" if roles == "*" and command.get("fanout") else f"role {roles}" if roles else ""
        if command.get("hosts"):
            text += f" hosts {command['hosts']}"
        if command.get("gid"):
            text += f" in {command['gid']}"
        if command.get("fanout") and roles != "*":
            text += " fanout"
    if command.get("exclude"):
        text += f" but {','.join(command['exclude'])}"
    if command.get("rollout"):
        text += " rollout"
    return text.strip()


def _words(command: dict[str, Any]) -> str:
    args = command.get("args") or {}
    words = [str(args["name"]), *(str(arg) for arg in args.get("args") or [])] if args.get("name") else []
    return " ".join([command.get("cmd", ""), *words])


def _job_error_text(failure: Failure) -> str:
    text = str(failure)
    marker = " ended ERROR: "
    return text.split(marker, 1)[1] if marker in text else text
