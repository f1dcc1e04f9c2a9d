"""Serving Prometheus metrics: one ``/metrics`` endpoint per service, on a port of its own setting."""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from switchboard.ports import port_error

log = logging.getLogger(__name__)


def serve_metrics(registry: CollectorRegistry, host: str, port: int, *, service: str, setting: str) -> WSGIServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a background thread; ConfigError naming
    ``setting`` when the port is taken. Logs "{service} metrics on URL" (tests read the port from it)."""
    env = "SWITCHBOARD_" + setting.replace(".", "__").upper()
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise port_error(exc, host, port, setting=setting, env=env) from None
    log.info("%s metrics on http://%s:%d/metrics", service, host, server.server_port)
    return server
