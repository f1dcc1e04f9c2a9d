"""What the operator console charts: a few totals and gauges read from the services' own Prometheus metrics.

A source is anything that yields metric families: a registry in this process (``switchboard up`` hands the
API the broker's and the bridge's, see cli/stack.py) or another process's ``/metrics`` read over HTTP
(``switchboard api`` alone). The console polls :func:`snapshot` and turns totals into rates itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

MetricSource = Callable[[], Iterable[Metric]]

#: Console name: (sample name, how several samples of it combine). Totals are cumulative counters.
SERIES: dict[str, str] = {
    "connections": "switchboard_broker_connections",
    "messages_in": "switchboard_broker_messages_received_total",
    "messages_out": "switchboard_broker_messages_sent_total",
    "bridge_lag": "switchboard_bridge_lag",
    "bridge_stored": "switchboard_bridge_stored_total",
    "bridge_rejected": "switchboard_bridge_rejected_total",
    "api_requests": "switchboard_api_request_seconds_count",
    "api_seconds": "switchboard_api_request_seconds_sum",
}


def registry_source(registry: CollectorRegistry) -> MetricSource:
    """The metrics of a registry in this process."""
    return registry.collect


def http_source(url: str, timeout: float = 2.0) -> MetricSource:
    """The metrics another process serves at ``url``; nothing while it does not answer."""

    def collect() -> Iterable[Metric]:
        try:
            text = httpx.get(url, timeout=timeout, trust_env=False).text
        except httpx.HTTPError:
            return []
        return list(text_string_to_metric_families(text))

    return collect


def snapshot(sources: Iterable[MetricSource]) -> dict[str, float | None]:
    """The console's series now: each the sum of its samples over all sources (labels added up), None
    for a series no source has (a service not running, or its metrics turned off)."""
    wanted = {sample: name for name, sample in SERIES.items()}
    values: dict[str, float | None] = dict.fromkeys(SERIES)
    for source in sources:
        for family in source():
            for sample in family.samples:
                name = wanted.get(sample.name)
                if name is not None:
                    values[name] = (values[name] or 0.0) + sample.value
    return values
