"""The bridge's Prometheus metrics (docs/bridge.md explains each), served on ``bridge.metrics_port``."""

from __future__ import annotations

from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from switchboard.observability import serve_metrics


class BridgeMetrics:
    """Counters and gauges in a registry of their own (the caller decides whether to serve them)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("switchboard_bridge_received", "Messages received from the broker.", registry=r)
        self.stored = Counter("switchboard_bridge_stored", "Messages stored for the first time.", registry=r)
        self.duplicates = Counter(
            "switchboard_bridge_duplicates", "Messages whose (sender, id) was already stored.", registry=r
        )
        self.recorded = Counter("switchboard_bridge_recorded", "Presence and receipt updates applied.", registry=r)
        self.rejected = Counter("switchboard_bridge_rejected", "Messages kept in rejected_messages.", registry=r)
        self.batch_size = Histogram(
            "switchboard_bridge_batch_size",
            "Messages per committed batch.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "switchboard_bridge_commit_seconds",
            "Time to store and commit one batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=r,
        )
        self.lag = Gauge(
            "switchboard_bridge_lag", "Messages received from the broker and not yet committed.", registry=r
        )
        self.waiting_for_database = Gauge(
            "switchboard_bridge_waiting_for_database",
            "1 while the bridge retries an unreachable database.",
            registry=r,
        )
        self.connected = Gauge("switchboard_bridge_connected", "1 while connected to the broker.", registry=r)
        self.live_events = Counter(
            "switchboard_bridge_live_events",
            "Events of the live-events outbox (read receipts made through REST) published and acknowledged.",
            registry=r,
        )

    def track_lag(self, pending: Callable[[], int]) -> None:
        self.lag.set_function(lambda: float(pending()))


def serve_bridge_metrics(metrics: BridgeMetrics, host: str, port: int) -> WSGIServer:
    """Serve ``/metrics`` in a background thread; ConfigError when the port is taken."""
    return serve_metrics(metrics.registry, host, port, service="bridge", setting="bridge.metrics_port")
