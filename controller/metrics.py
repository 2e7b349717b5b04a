"""What a controller tells Prometheus (``[metrics] listen``); docs/operations.md lists every metric."""

import collections
import time
from collections.abc import Iterable
from importlib import metadata
from typing import TYPE_CHECKING

from acdaemon.metrics import Histogram, Metric, by_label, counter, gauge
from protocol.presence import Heartbeat

if TYPE_CHECKING:
    from controller.registry import AgentView
    from controller.service import Controller

VERSION = metadata.version("agentcontroller")


def controller_metrics(controller: "Controller") -> list[Metric | Histogram]:
    intake, liveness, registry = controller.intake, controller.liveness, controller.registry
    results = collections.Counter(controller.collector.results)
    results.update(intake.answers)
    results["ERROR"] += liveness.jobs_failed
    agents = list(registry.agents.values())
    return [
        Metric("ac_controller_info", "gauge", "This controller: its id and version", [((controller.id, VERSION), 1)],
               ("controller", "version")),
        counter("ac_controller_commands_routed_total", "Commands sent to agents, one per target agent",
                intake.routed),
        by_label("ac_controller_results_total", "counter", "Results this controller appended to cmds_queue_<id>: "
                 "agents' results it collected and its own answers, by state", "state", sorted(results.items())),
        intake.latency,
        counter("ac_controller_dead_letters_total", "Input without a usable id, put on the dead-letter list",
                intake.dead_letters),
        gauge("ac_controller_agents_alive", "Agents whose heartbeat is current", sum(view.alive for view in agents)),
        gauge("ac_controller_agents_known", "Agents ever registered on this bus", len(agents)),
        counter("ac_controller_agents_lost_total", "Agents this controller saw stop beating", liveness.agents_lost),
        counter("ac_controller_bus_data_losses_total", "Times this controller found that the bus had lost its data "
                "(Redis restarted without persistence, or flushed)", liveness.data_losses),
        counter("ac_controller_bus_failovers_total", "Times the bus's master moved (a Sentinel failover) and this "
                "controller looked at its books again on the new one", liveness.failovers),
        counter("ac_controller_jobs_adopted_total", "Jobs agents still ran after the bus lost its data, open again",
                controller.collector.jobs_adopted),
        gauge("ac_controller_jobs_running", "Jobs routed to agents and not finished yet (by any controller)",
              sum(view.load for view in agents)),
        counter("ac_controller_results_dropped_total", "Results from agents for jobs that were not open on them",
                controller.collector.dropped),
        counter("ac_controller_messages_dropped_total", "Log messages from agents for jobs that were not open on "
                "them (another agent's job, an answered one) or unreadable", controller.collector.messages_dropped),
        counter("ac_controller_registrations_refused_total", "Registrations that claimed roles the agent was not "
                "granted", controller.collector.registrations_refused),
        counter("ac_controller_envelopes_discarded_total", "Outbox envelopes over max_envelope_bytes, or beyond "
                "outbox_max", controller.collector.envelopes_discarded),
        counter("ac_controller_bell_floods_total", "Times an agent rang its outbox or tunnel bell again and again "
                "for nothing, and was paced", controller.collector.bell_floods + controller.tunnels.bell_floods),
        counter("ac_controller_bus_reconnects_total", "Times the connection to the bus was made again",
                controller.bus.reconnects),
        by_label("ac_controller_bus_refusals_total", "counter", "Commands the bus refused (OOM, LOADING, READONLY, "
                 "NOPERM, ...): waited out and tried again", "kind", sorted(controller.bus.refusals.items())),
        counter("ac_controller_event_handler_failures_total", "[events] handlers that failed or timed out",
                controller.handlers.failed),
        *agent_health(agents, time.time()),
    ]


#: The labels of the per-node series: which agent, on which host (as it registered).
AGENT_LABELS = ("gid", "nid", "host")


def agent_health(agents: Iterable["AgentView"], now: float) -> list[Metric]:
    """One series per known agent: whether its heartbeat is current, and how old its latest beat is that this
    controller knows of (none until it has read one)."""
    up, age = [], []
    for view in sorted(agents, key=lambda view: (view.gid, view.nid)):
        labels = (str(view.gid), str(view.nid), view.registration.hostname or "")
        up.append((labels, 1 if view.alive else 0))
        beat = view.last_beat or (Heartbeat.from_json(view.heartbeat).time or 0) / 1000
        if beat:
            age.append((labels, max(0.0, round(now - beat, 3))))
    return [
        Metric("ac_agent_up", "gauge", "1 while the agent's heartbeat is current, 0 once it is lost; one series per "
               "agent this controller knows", up, AGENT_LABELS),
        Metric("ac_agent_heartbeat_age_seconds", "gauge", "Seconds since the agent's latest heartbeat this "
               "controller knows of (read about once per heartbeat lifetime)", age, AGENT_LABELS),
    ]
