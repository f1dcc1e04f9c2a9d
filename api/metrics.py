"""The API's Prometheus metrics: request latency by route and status, served on ``api.metrics_port``.

The route label is the route's path template (``/v1/conversations/{conversation}/messages``), never the
raw path, so conversation ids neither leak into the metrics nor multiply its series; requests that match
no route are counted under ``unmatched``.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class MetricsMiddleware:
    """Times every HTTP request into ``metrics`` (plain ASGI: no task per request, unlike
    ``@app.middleware("http")``)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            latency = self.metrics.latency.labels(scope["method"], route, str(status[0]))
            latency.observe(time.perf_counter() - started)
