"""The broker's Prometheus metrics, served on ``mqtt.metrics_port`` (docs/broker.md lists them).

Read from the hub's counters when Prometheus scrapes, so the message path only increments integers it
already kept for ``$SYS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.hub import Hub


class BrokerCollector(Collector):
    def __init__(self, hub: Hub, connections: Callable[[], int]) -> None:
        self._hub = hub
        self._connections = connections

    def collect(self) -> Iterator[Metric]:
        hub, stats = self._hub, self._hub.stats
        sessions = list(hub.sessions.values())
        yield GaugeMetricFamily("switchboard_broker_connections", "Open client connections.", self._connections())
        yield GaugeMetricFamily("switchboard_broker_sessions", "Sessions, connected or persistent.", len(sessions))
        yield GaugeMetricFamily(
            "switchboard_broker_subscriptions",
            "Subscriptions of all sessions (a shared subscription once per member).",
            hub.subscription_count(),
        )
        yield GaugeMetricFamily(
            "switchboard_broker_share_groups",
            "Shared subscriptions ($share/{group}/{filter}) with at least one member.",
            len(hub.shared.groups),
        )
        yield CounterMetricFamily(
            "switchboard_broker_shared_handed_over",
            "Messages of shared subscriptions given to another member because theirs went away.",
            stats.shared_handed_over,
        )
        yield GaugeMetricFamily(
            "switchboard_broker_queued_messages",
            "Messages queued for sessions (offline, or beyond their in-flight window).",
            sum(len(s.queue or ()) for s in sessions),
        )
        yield GaugeMetricFamily(
            "switchboard_broker_inflight_messages",
            "QoS 1/2 messages sent and not yet acknowledged.",
            sum(len(s.inflight) for s in sessions),
        )
        yield GaugeMetricFamily("switchboard_broker_retained_messages", "Retained messages.", len(hub.retained))
        for name, what, counts in (
            ("received", "PUBLISH packets received from clients, by QoS.", stats.messages_in),
            ("sent", "PUBLISH packets sent to clients, by QoS.", stats.messages_out),
        ):
            family = CounterMetricFamily(f"switchboard_broker_messages_{name}", what, labels=["qos"])
            for qos, count in enumerate(counts):
                family.add_metric([str(qos)], count)
            yield family
        dropped = CounterMetricFamily(
            "switchboard_broker_messages_dropped",
            "Messages dropped: the oldest of a full session queue (queue_full, current sessions), or QoS 0 "
            "for a client that stopped reading (slow_consumer).",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], sum(s.dropped for s in sessions))
        dropped.add_metric(["slow_consumer"], stats.dropped_qos0)
        yield dropped
        refused = CounterMetricFamily(
            "switchboard_broker_messages_refused",
            "Chat messages refused at the broker's door, delivered to no one, the sender told on ack/{user}: by "
            "reason (not_authorized: ACL, block or chat.dm_policy; rate: over mqtt.publish_rate; payload: not a "
            "valid message).",
            labels=["reason"],
        )
        for reason, count in stats.refused.items():
            refused.add_metric([reason], count)
        yield refused
        yield CounterMetricFamily(
            "switchboard_broker_auth_failures", "CONNECTs refused for bad credentials.", stats.auth_failures
        )
        yield CounterMetricFamily(
            "switchboard_broker_refused_connections",
            "Connections refused at mqtt.max_connections.",
            stats.refused_connections,
        )


def broker_registry(hub: Hub, connections: Callable[[], int]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(BrokerCollector(hub, connections))
    return registry
