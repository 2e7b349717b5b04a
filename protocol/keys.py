"""Every Redis key and channel name used on the bus.

Three families:

* client-facing keys, spelled exactly as the 2015 client expects them;
* per-agent keys, all under ``ac:agent:<gid>:<nid>:`` so that one Redis ACL
  user per agent can be limited to that prefix;
* controller bookkeeping under ``ac:ctl:``, never writable by an agent.
"""

from dataclasses import dataclass

# -- client-facing (2015 wire) ------------------------------------------------

CMDS_QUEUE = "cmds_queue"
JOBLOG = "joblog"
RESULT_QUEUE_PREFIX = "cmds_queue_"
JOB_RESULTS_PREFIX = "jobresult:"


def result_queue(command_id: str) -> str:
    """List the client pops: one job JSON per result of the command."""
    return RESULT_QUEUE_PREFIX + command_id


def job_results(command_id: str) -> str:
    """Hash ``"<gid>:<nid>"`` -> latest job JSON of that agent for the command."""
    return JOB_RESULTS_PREFIX + command_id


JOB_CHANNEL_PREFIX = "ac:jobs:"
UPDATES_SUFFIX = ":updates"
MESSAGES_SUFFIX = ":msgs"


def job_updates(command_id: str) -> str:
    """Pub/sub channel: every update of the command's jobs (job JSON), as it is stored."""
    return JOB_CHANNEL_PREFIX + command_id + UPDATES_SUFFIX


def job_messages(command_id: str) -> str:
    """Pub/sub channel: the command's messages as the agents' AC loggers send them (message JSON)."""
    return JOB_CHANNEL_PREFIX + command_id + MESSAGES_SUFFIX


def agent_name(gid: int, nid: int) -> str:
    """How an agent is named on the wire: the field name in ``jobresult:<id>``."""
    return f"{gid}:{nid}"


def parse_agent_name(name: str) -> tuple[int, int]:
    gid, _, nid = name.partition(":")
    return int(gid), int(nid)


# -- per agent ----------------------------------------------------------------

AGENT_PREFIX = "ac:agent:"


@dataclass(frozen=True, slots=True)
class AgentKeys:
    """The keys of one agent. An agent touches no key outside ``prefix``."""

    gid: int
    nid: int

    @property
    def name(self) -> str:
        return agent_name(self.gid, self.nid)

    @property
    def prefix(self) -> str:
        return f"{AGENT_PREFIX}{self.gid}:{self.nid}:"

    @property
    def commands(self) -> str:
        """List: commands routed to this agent (controller RPUSH, agent BLMOVE)."""
        return self.prefix + "cmds"

    @property
    def inflight(self) -> str:
        """List: commands the agent took and has not finished yet."""
        return self.prefix + "inflight"

    @property
    def outbox(self) -> str:
        """List: envelopes from the agent (results, registration, logs, stats)."""
        return self.prefix + "outbox"

    @property
    def outbox_seq(self) -> str:
        """String: sequence number of the last envelope written to the outbox.

        Written in the same transaction as the envelopes, so after a lost
        connection the agent knows exactly which envelopes arrived.
        """
        return self.prefix + "outseq"

    @property
    def alive(self) -> str:
        """String with a TTL: the heartbeat."""
        return self.prefix + "alive"

    @property
    def bell(self) -> str:
        """Pub/sub channel: rung after each outbox write to wake the controllers."""
        return self.prefix + "bell"

    # Tunnels (``protocol/tunnels.py`` has the messages; ``docs/tunnels.md`` the whole story).

    @property
    def tunnel_requests(self) -> str:
        """List: tunnel requests to the controllers (open a connection, probe a gateway); agent RPUSH."""
        return self.prefix + "tunnel:requests"

    @property
    def tunnel_orders(self) -> str:
        """List: what controllers tell the agent about tunnel connections; agent LPOP."""
        return self.prefix + "tunnel:orders"

    @property
    def tunnel_up(self) -> str:
        """Pub/sub channel, agent -> controllers: requests are waiting, or a connection needs relaying."""
        return self.prefix + "tunnel:up"

    @property
    def tunnel_down(self) -> str:
        """Pub/sub channel, controllers -> agent: orders are waiting, or a connection has data or room."""
        return self.prefix + "tunnel:down"

    @property
    def tunnel_streams(self) -> str:
        """Set: the tunnel connections the agent holds, so that its next start can report leftovers."""
        return self.prefix + "tunnel:streams"

    def stream_in(self, stream: str) -> str:
        """List: chunks of connection ``stream`` for the agent to write to its socket."""
        return f"{self.prefix}tunnel:{stream}:in"

    def stream_out(self, stream: str) -> str:
        """List: chunks the agent read from its socket, for the controller to relay."""
        return f"{self.prefix}tunnel:{stream}:out"

    def stream_lease(self, stream: str) -> str:
        """String with a TTL, kept alive by the controller relaying ``stream``: while it exists, the
        connection is relayed."""
        return f"{self.prefix}tunnel:{stream}:lease"


#: Pattern a controller subscribes to, to hear every agent's bell.
AGENT_BELL_PATTERN = AGENT_PREFIX + "*:bell"
#: Pattern matching every agent's outbox.
AGENT_OUTBOX_PATTERN = AGENT_PREFIX + "*:outbox"
#: Pattern a controller subscribes to, to hear every agent's tunnel channel.
AGENT_TUNNEL_UP_PATTERN = AGENT_PREFIX + "*:tunnel:up"


def agent_of(key: str) -> tuple[int, int]:
    """The agent a per-agent key or channel belongs to: ``ac:agent:1:7:bell`` -> ``(1, 7)``."""
    gid, nid, _ = key[len(AGENT_PREFIX):].split(":", 2)
    return int(gid), int(nid)


# -- controller bookkeeping ---------------------------------------------------

CONTROLLER_PREFIX = "ac:ctl:"

#: Hash ``"<gid>:<nid>"`` -> registration JSON of every agent ever seen.
AGENTS = CONTROLLER_PREFIX + "agents"

#: String: a token the controllers keep on the bus. It vanishes only with the bus's data (Redis restarted
#: without persistence, or flushed): a controller that finds it gone or changed knows the bus lost what it
#: held, and so does a client waiting for a result (readable with the client's credentials).
BUS_EPOCH = "ac:bus:epoch"
#: Start of a ``BUS_EPOCH`` set after a Sentinel failover (the new master may lack the last writes of the old
#: one): a client whose command the bus no longer knows then says it was lost in a failover.
FAILOVER_EPOCH_PREFIX = "failover-"

#: String with a TTL, set by a controller that found the bus lost its data (or moved to a new master, which
#: may have missed the last writes): while it exists (or while
#: ``BUS_EPOCH`` is missing), agents' ``adopt`` envelopes reopen the jobs the bus forgot.
ADOPTING = CONTROLLER_PREFIX + "adopting"

#: String: the replication id (``INFO replication`` ``master_replid``) of the master the controllers' books were
#: written on, with Sentinel: a controller that finds another one knows a replica was promoted (a failover).
MASTER_REPLID = CONTROLLER_PREFIX + "master-replid"

#: Hash ``"<gid>:<nid>"`` -> JSON list of the roles the operator granted that agent (``acl add-agent
#: --roles``). An agent with an entry may register with those roles only; one without claims its own.
GRANTED_ROLES = CONTROLLER_PREFIX + "granted-roles"

#: Hash Redis user name -> JSON of what ``ac-controller acl`` recorded when it made that user: ``kind``
#: (``agent`` or ``client``), ``created`` (epoch s), ``by`` (who ran the command, ``user@host``), and for an
#: agent ``gid``, ``nid`` and the ``hostname`` of an inventory; for a client ``name``. The users themselves are
#: in Redis's ACL (its ``aclfile``); this book says where they came from (``acl list``).
ACL_USERS = CONTROLLER_PREFIX + "acl-users"

#: Pub/sub channel where controllers announce what happened (JSON events).
EVENTS = CONTROLLER_PREFIX + "events"

#: List of inputs that could not be answered at all, newest first, with reasons.
DEAD_LETTERS = CONTROLLER_PREFIX + "deadletters"

#: Counter of every dead letter ever (the list above is trimmed).
DEAD_LETTER_COUNT = CONTROLLER_PREFIX + "deadletters:count"


def agent_logs(gid: int, nid: int) -> str:
    """List: messages an agent's AC logger sent, newest first, trimmed."""
    return f"{CONTROLLER_PREFIX}logs:{gid}:{nid}"


def job_stats(gid: int, nid: int) -> str:
    """Hash job id -> latest aggregated stats JSON of that agent's running jobs."""
    return f"{CONTROLLER_PREFIX}stats:{gid}:{nid}"


def running_jobs(gid: int, nid: int) -> str:
    """Hash job id -> 0: the jobs routed to that agent and not answered yet.

    Only updates of these jobs are taken from the agent's outbox.
    """
    return f"{CONTROLLER_PREFIX}running:{gid}:{nid}"


def controller_inflight(controller_id: str) -> str:
    """List: commands a controller took from ``cmds_queue`` and has not routed yet."""
    return f"{CONTROLLER_PREFIX}inflight:{controller_id}"


CONTROLLER_INFLIGHT_PATTERN = CONTROLLER_PREFIX + "inflight:*"


def controller_alive(controller_id: str) -> str:
    """String with a TTL: a controller's heartbeat."""
    return f"{CONTROLLER_PREFIX}alive:{controller_id}"


#: Set of the ids of controllers that may hold a batch in their inflight list.
CONTROLLERS = CONTROLLER_PREFIX + "controllers"

def rollout(command_id: str) -> str:
    """Hash: a rollout in progress (``controller/rollouts.py``): the command, the targets not started yet,
    the current wave, the failures so far."""
    return f"{CONTROLLER_PREFIX}rollout:{command_id}"


ROLLOUT_PREFIX = rollout("")

#: Sorted set of the ids of the rollouts in progress (score: when each started, bus ms).
ROLLOUTS = CONTROLLER_PREFIX + "rollouts"

#: String with a TTL that every controller renews: while it exists, some controller routes. Clients read
#: it, to say at once that no controller is alive instead of waiting out their timeout.
CONTROLLER_ALIVE = "ac:bus:controller"

#: Hash ``"<gid>:<nid>"`` -> bus ms when a controller saw that agent stop beating (for ``forget_after``).
LAST_SEEN = CONTROLLER_PREFIX + "last-seen"

#: Hash schedule id -> schedule JSON ``{"id", "cron", "cmd"}`` (``scheduler_add``).
SCHEDULES = CONTROLLER_PREFIX + "schedules"

#: Sorted set schedule id -> epoch ms of its next tick.
SCHEDULES_DUE = CONTROLLER_PREFIX + "schedules:due"

#: Hash schedule id -> JSON ``{"id", "time"}`` of the command its last tick submitted.
SCHEDULES_LAST = CONTROLLER_PREFIX + "schedules:last"


def tunnel_record(stream: str) -> str:
    """Hash: one relayed tunnel connection (its ends, its owner, which ends have finished sending)."""
    return f"{CONTROLLER_PREFIX}tunnel:{stream}"


def tunnel_grants(gid: int, nid: int) -> str:
    """Hash: where clients let agent ``gid:nid`` open tunnels to (``protocol.tunnels.grant``) -> times granted.
    Written by the controller routing ``hubble_open_tunnel``; an agent can neither read nor write it."""
    return f"{CONTROLLER_PREFIX}tunnel-grants:{gid}:{nid}"


def tunnels_owned(controller_id: str) -> str:
    """Set: the tunnel connections a controller relays (a peer adopts them if it dies)."""
    return f"{CONTROLLER_PREFIX}tunnels:{controller_id}"


#: Set of the ids of controllers that may own tunnel connections.
TUNNEL_OWNERS = CONTROLLER_PREFIX + "tunnel-owners"
