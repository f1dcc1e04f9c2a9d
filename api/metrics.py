"""The API's Prometheus metrics: request latency by route and status, served on ``api.metrics_port``.

The route label is the route's path template (``/v1/conversations/{conversation}/messages``), never the
raw path, so conversation ids neither leak into the metrics nor multiply its series; requests that match
no route are counted under ``unmatched``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Histogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "switchboard_api_request_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["method", "route", "status"],
            buckets=BUCKETS,
            registry=self.registry,
        )

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        self.latency.labels(request.method, route, str(response.status_code)).observe(time.perf_counter() - started)
        return response
