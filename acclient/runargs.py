"""``RunArgs``: how an agent should run a command."""

from typing import Any

from protocol.command import RunArgs as WireRunArgs

_FIELDS = ("domain", "name", "max_time", "max_restart", "recurring_period", "stats_interval", "args",
           "loglevels", "loglevels_db", "loglevels_ac", "queue", "working_dir", "env")


class RunArgs:
    """Run arguments; unset (``None``) and zero values are not sent.

    :param domain: domain name (of a jumpscript)
    :param name: script or executable name
    :param max_time: 0 no limit, -1 long-running (restarted with the agent), > 0 timeout in seconds
    :param max_restart: restarts of a run that failed within 5 minutes
    :param recurring_period: run again this many seconds after each run ends
    :param stats_interval: how often the job's stats are flushed to the controller
    :param args: command line arguments (for ``execute``)
    :param loglevels: levels to keep at all (``"*"``, ``"1,2,6-9"`` or a list)
    :param loglevels_db: levels to store in the agent's DB (overrides its logger)
    :param loglevels_ac: levels to send to the controller (overrides its logger)
    :param queue: name of a serial queue: jobs of one queue run one after another
    :param working_dir: working directory of the process
    :param env: extra environment variables of the process
    """

    def __init__(self, domain: str | None = None, name: str | None = None, max_time: float = 0,
                 max_restart: int = 0, recurring_period: float = 0, stats_interval: float = 0,
                 args: list[str] | None = None, loglevels: Any = "*", loglevels_db: Any = None,
                 loglevels_ac: Any = None, queue: str | None = None, working_dir: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        values = dict(domain=domain, name=name, max_time=max_time, max_restart=max_restart,
                      recurring_period=recurring_period, stats_interval=stats_interval, args=args,
                      loglevels=loglevels, loglevels_db=loglevels_db, loglevels_ac=loglevels_ac, queue=queue,
                      working_dir=working_dir, env=env)
        self._args = {key: value for key, value in values.items() if value is not None and value != 0}
        self.wire = WireRunArgs.from_wire(self._args)  # a bad value raises ValueError naming it, here

    def dump(self) -> dict[str, Any]:
        """The run arguments as sent on the wire."""
        return dict(self._args)

    def update(self, args: "RunArgs | dict[str, Any]") -> "RunArgs":
        """A new ``RunArgs``: these arguments overridden by ``args``."""
        changes = args.dump() if isinstance(args, RunArgs) else dict(args)
        return RunArgs(**{**self._args, **changes})

    def __repr__(self) -> str:
        return f"RunArgs({self._args!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunArgs) and other._args == self._args

    domain = property(lambda self: self._args.get("domain"), doc="Command domain name")
    name = property(lambda self: self._args.get("name"), doc="Script or executable name")
    max_time = property(lambda self: self._args.get("max_time", 0), doc="Max execution time")
    max_restart = property(lambda self: self._args.get("max_restart", 0), doc="Max number of restarts")
    recurring_period = property(lambda self: self._args.get("recurring_period", 0), doc="How often to run")
    stats_interval = property(lambda self: self._args.get("stats_interval", 0), doc="Stats flush interval")
    args = property(lambda self: self._args.get("args"), doc="List of command line arguments")
    loglevels = property(lambda self: self._args.get("loglevels"), doc="Log levels to process")
    loglevels_db = property(lambda self: self._args.get("loglevels_db"), doc="Log levels to store in the DB")
    loglevels_ac = property(lambda self: self._args.get("loglevels_ac"), doc="Log levels to send to the AC")
    queue = property(lambda self: self._args.get("queue"), doc="Serial queue to wait in")
    working_dir = property(lambda self: self._args.get("working_dir"), doc="Working directory")
    env = property(lambda self: self._args.get("env"), doc="Extra environment variables")
