"""What an agent tells Prometheus (``[metrics] listen``); docs/operations.md lists every metric."""

import collections
from typing import TYPE_CHECKING

import agent as agent_package
from acdaemon.metrics import Metric, by_label, counter, gauge

if TYPE_CHECKING:
    from agent.service import Agent


def agent_metrics(agent: "Agent") -> list[Metric]:
    config, uplinks = agent.config, agent.uplinks
    results: collections.Counter[str] = collections.Counter()
    for uplink in uplinks.values():
        results.update(uplink.results)
    return [
        Metric("ac_agent_info", "gauge", "This agent: its gid, nid and version",
               [((str(config.gid), str(config.nid), agent_package.__version__), 1)], ("gid", "nid", "version")),
        counter("ac_agent_commands_total", "Commands taken from the controllers' queues", agent.dispatcher.taken),
        by_label("ac_agent_results_total", "counter", "Results reported (the end of each run), by state", "state",
                 sorted(results.items())),
        gauge("ac_agent_jobs_running", "Job processes running (each holds a max_jobs slot)", agent.slots.running),
        gauge("ac_agent_jobs_waiting", "Jobs waiting for a max_jobs slot or their turn in a queue",
              agent.slots.waiting),
        gauge("ac_agent_max_jobs", "[main] max_jobs", config.max_jobs),
        counter("ac_agent_messages_logged_total", "Messages from jobs' output that were kept (each has an id)",
                agent.loggers.ids.taken if agent.loggers.ids else 0),
        counter("ac_agent_messages_dropped_total", "Messages AC loggers dropped while an outbox was full",
                sum(logger.dropped for logger in agent.loggers.ac)),
        by_label("ac_agent_spool_envelopes", "gauge", "Envelopes waiting to reach the bus, per controller",
                 "controller", [(name, len(uplink.outbox)) for name, uplink in uplinks.items()]),
        by_label("ac_agent_spool_bytes", "gauge", "Bytes of the envelopes waiting to reach the bus, per controller",
                 "controller", [(name, uplink.outbox.spooled_bytes) for name, uplink in uplinks.items()]),
        by_label("ac_agent_envelopes_dropped_total", "counter", "Envelopes dropped because the spool was full, per "
                 "controller", "controller", [(name, uplink.outbox.dropped) for name, uplink in uplinks.items()]),
        by_label("ac_agent_bus_reconnects_total", "counter", "Times the connection to a controller's bus was made "
                 "again", "controller", [(name, uplink.bus.reconnects) for name, uplink in uplinks.items()]),
        by_label("ac_agent_bus_failovers_total", "counter", "Times a controller's bus moved to a new master (Sentinel)",
                 "controller", [(name, uplink.bus.switches) for name, uplink in uplinks.items()]),
        by_label("ac_agent_writes_unconfirmed_total", "counter", "Outbox writes fewer replicas than wait_replicas "
                 "confirmed in time (a failover could lose them), per controller", "controller",
                 [(name, uplink.bus.unconfirmed) for name, uplink in uplinks.items()]),
        Metric("ac_agent_bus_refusals_total", "counter", "Commands a controller's bus refused (OOM, LOADING, "
               "READONLY, NOPERM, ...): waited out and tried again", [((name, kind), count)
               for name, uplink in uplinks.items() for kind, count in sorted(uplink.bus.refusals.items())],
               ("controller", "kind")),
    ]
