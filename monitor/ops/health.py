"""/healthz, /readyz and /metrics on a small HTTP server of their own, off unless MONITOR_HTTP_PORT is set."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from monitor.errors import MonitorError
from monitor.ops.metrics import REGISTRY, refresh_gauges
from monitor.storage import Storage

log = logging.getLogger(__name__)


class HealthServer:
    """/healthz (the process is alive), /readyz (database reachable, schema current), /metrics (Prometheus)."""

    def __init__(self, storage: Storage, host: str, port: int) -> None:
        self.storage = storage
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, content_type = outer.answer(self.path.split("?", 1)[0])
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)

    def answer(self, path: str) -> tuple[int, bytes, str]:
        if path == "/healthz":
            return 200, b"ok\n", "text/plain; charset=utf-8"
        if path == "/readyz":
            try:
                current, head = self.storage.schema_status()
            except MonitorError as e:  # the driver's words stay in the log: they name hosts and users
                log.warning("readyz: %s", e)
                return 503, b"database unreachable\n", "text/plain; charset=utf-8"
            if current != head:
                return 503, f"schema at {current}, needs {head}\n".encode(), "text/plain; charset=utf-8"
            return 200, b"ready\n", "text/plain; charset=utf-8"
        if path == "/metrics":
            try:
                refresh_gauges(self.storage)
            except MonitorError as e:
                log.warning("metrics: cannot read the database: %s", e)
            return 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST
        return 404, b"not found\n", "text/plain; charset=utf-8"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
