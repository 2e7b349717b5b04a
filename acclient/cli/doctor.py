"""``ac doctor``: what is wrong with a bus, one finding a line, each with what to do."""

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from acclient.cli.app import Context, explain
from acclient.cli.parser import Exit
from acclient.cli.render import nodeset, print_json, print_jsonl
from protocol import keys

OK, WARN, FAIL = "ok", "warn", "FAIL"
#: ``cmds_queue`` deeper than this with a controller alive: the controllers fall behind.
DEEP_QUEUE = 1000


@dataclass
class Finding:
    check: str
    status: str
    text: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.check:<12} {self.text}"


def doctor_command(context: Context) -> int:
    options = context.options
    findings: list[Finding] = []

    def say(check: str, status: str, text: str) -> None:
        finding = Finding(check, status, text)
        findings.append(finding)
        if options.jsonl:
            print_jsonl(asdict(finding))
        elif not options.json:
            print(finding.line())

    code = _examine(context, say)
    if options.json:
        print_json({"bus": context.where, "findings": [asdict(finding) for finding in findings],
                    "exit_code": int(code)})
    return code


def _examine(context: Context, say: Callable[[str, str, str], None]) -> int:
    where, options = context.where, context.options
    try:
        client = context.client
    except Exception as exc:
        failure = explain(exc, options)
        if failure is None:
            raise
        say("reach", FAIL, str(failure))
        return failure.code
    bus = client._redis
    user = _ask(bus.acl_whoami)
    version = _ask(lambda: bus.info("server").get("redis_version"))
    say("reach", OK, f"{where} answers as user {user if isinstance(user, str) else '?'}"
        f"{f' (Redis {version})' if isinstance(version, str) else ''}")
    problems = 0

    def finding(check: str, status: str, text: str) -> None:
        nonlocal problems
        problems += status != OK
        say(check, status, text)

    if context.address.tls:
        finding("tls", OK, "TLS in use (rediss://)")
    elif context.address.unix_path or context.address.host in ("127.0.0.1", "localhost", "::1"):
        finding("tls", OK, "no TLS, on this host only (loopback or a unix socket)")
    else:
        finding("tls", WARN, "no TLS: commands that run as root on nodes cross the network in clear; use rediss:// "
                             "(docs/security.md)")

    alive = bool(bus.exists(keys.CONTROLLER_ALIVE))
    if alive:
        finding("controller", OK, f"a controller is alive ({keys.CONTROLLER_ALIVE} is current)")
    else:
        finding("controller", FAIL, "no controller is alive: nothing is routed; start one (systemctl start "
                                    "ac-controller, or ac-controller -c controller.toml)")

    depth = _ask(lambda: bus.llen(keys.CMDS_QUEUE))
    if isinstance(depth, Exception):
        finding("queue", WARN, f"the depth of {keys.CMDS_QUEUE} cannot be read ({_why(depth)})")
    elif depth and not alive:
        finding("queue", WARN, f"{depth} commands wait in {keys.CMDS_QUEUE} for a controller (they expire after "
                               "their ttl or route_ttl)")
    elif depth > DEEP_QUEUE:
        finding("queue", WARN, f"{depth} commands wait in {keys.CMDS_QUEUE}: the controllers fall behind; run "
                               "another (ac-controller), or look at ac_controller_routing_seconds")
    else:
        finding("queue", OK, f"{depth} commands waiting in {keys.CMDS_QUEUE}")

    letters = _ask(lambda: bus.get(keys.DEAD_LETTER_COUNT))
    if isinstance(letters, Exception):
        finding("deadletters", WARN, f"{keys.DEAD_LETTER_COUNT} cannot be read ({_why(letters)})")
    elif letters and int(letters):
        finding("deadletters", WARN, f"{int(letters)} dead letters: some client sends what no controller can "
                                     f"answer; look at LRANGE {keys.DEAD_LETTERS} 0 9 (newest first)")
    else:
        finding("deadletters", OK, "no dead letters")

    _agents(context, bus, alive, finding)
    _config(bus, finding)
    return Exit.NO_CONTROLLER if not alive else Exit.FAILED if problems else Exit.OK


def _agents(context: Context, bus: redis.Redis, alive: bool, finding: Callable[[str, str, str], None]) -> None:
    """Agents registered and not beating, read from the registry itself (no controller needed), else asked."""
    registered = _ask(lambda: bus.hkeys(keys.AGENTS))
    if not isinstance(registered, Exception):
        agents = [keys.parse_agent_name(name.decode()) for name in registered]
        with bus.pipeline(transaction=False) as pipe:
            for gid, nid in agents:
                pipe.exists(keys.AgentKeys(gid, nid).alive)
            beating = pipe.execute()
        down = [agent for agent, up in zip(agents, beating, strict=True) if not up]
    elif alive:
        try:
            down = [(agent["gid"], agent["nid"]) for agent in context.client.list_agents(alive=False, timeout=10)]
        except Exception as exc:
            finding("agents", WARN, f"cannot tell which agents are down ({_why(exc)})")
            return
        agents = None
    else:
        finding("agents", WARN, f"cannot tell which agents are down: the registry cannot be read "
                                f"({_why(registered)}) and no controller is alive to ask")
        return
    known = f" of {len(agents)}" if agents is not None else ""
    if down:
        finding("agents", WARN, f"{len(down)}{known} agents down: {nodeset(down)}; start them (systemctl start "
                                "ac-agent) or, if they are gone for good, ac agents forget GID:NID")
    else:
        finding("agents", OK, f"every agent{known} beats" if agents is None or agents else "no agent registered yet")


def _config(bus: redis.Redis, finding: Callable[[str, str, str], None]) -> None:
    settings: dict[str, Any] = {}
    for name in ("appendonly", "save", "maxmemory", "maxmemory-policy", "aclfile"):
        answer = _ask(functools.partial(bus.config_get, name))
        if isinstance(answer, Exception):
            finding("config", WARN, f"CONFIG GET is refused ({_why(answer)}): check appendonly yes, maxmemory "
                                    "and maxmemory-policy noeviction by hand, or run ac doctor as an admin user")
            return
        settings[name] = answer.get(name, "")
    if settings["appendonly"] == "yes":
        finding("persistence", OK, "appendonly yes: what the bus accepted survives a restart")
    else:
        saved = f" (only RDB snapshots: save {settings['save']!r})" if settings["save"] else ""
        finding("persistence", WARN, f"appendonly no{saved}: a restart loses commands and results; CONFIG SET "
                                     "appendonly yes and CONFIG REWRITE (docs/operations.md)")
    policy, limit = settings["maxmemory-policy"], int(settings["maxmemory"] or 0)
    if policy != "noeviction":
        finding("memory", FAIL, f"maxmemory-policy {policy}: a full Redis would drop someone's results; CONFIG SET "
                                "maxmemory-policy noeviction")
    elif not limit:
        finding("memory", WARN, "no maxmemory: agents can fill the host's memory; CONFIG SET maxmemory 2gb (what "
                                "the host can spare), with maxmemory-policy noeviction")
    else:
        finding("memory", OK, f"maxmemory {limit // 2**20} MiB, policy noeviction")
    users = _ask(lambda: bus.acl_users())
    extra_users = [user for user in users if user != "default"] if isinstance(users, list) else []
    if settings["aclfile"]:
        finding("acl", OK, f"aclfile {settings['aclfile']}: users survive a restart")
    elif extra_users:
        finding("acl", WARN, f"no aclfile, and {len(extra_users)} ACL users: they vanish when Redis restarts; set "
                             "aclfile in redis.conf (then ACL SAVE)")
    else:
        default = _ask(lambda: bus.acl_getuser("default"))
        flags = default.get("flags", []) if isinstance(default, dict) else []
        if "nopass" in flags and "on" in flags:
            finding("acl", WARN, "the default user needs no password: whoever reaches the bus runs commands as root "
                                 "on the nodes; give agents and clients users of their own (ac-controller acl, "
                                 "docs/security.md), with an aclfile")
        else:
            finding("acl", OK, "no aclfile, and no ACL users that would need one")


def _ask(question: Callable[[], Any]) -> Any:
    """The answer, or the exception a refusal raised (a client user may not ask everything)."""
    try:
        return question()
    except redis.ResponseError as exc:
        return exc


def _why(exc: Any) -> str:
    text = str(exc)
    if isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in text or "no permissions" in text:
        return f"refused by the ACL: {text}"
    return text

