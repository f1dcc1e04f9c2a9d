"""A real HTTP server for webhook tests: records every POST, answers with the statuses a test plans."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    #: When it arrived (time.monotonic()).
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Webhook:
    """An HTTP server that records every POST and answers with the next planned status (200 when none)."""

    port: int = 0
    calls: list[Call] = field(default_factory=list)
    statuses: queue.Queue[int] = field(default_factory=queue.Queue)
    #: Seconds to wait before answering (a slow receiver).
    delay: float = 0.0

    def __post_init__(self) -> None:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.calls.append(Call({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(hook.delay)
                status = 200 if hook.statuses.empty() else hook.statuses.get()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def for_user(self, user: str) -> list[Call]:
        return [call for call in self.calls if call.json["user"] == user]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
