"""Running it in production: metrics, the health endpoint, structured logs and retention.

Each worker process serves its own ``/metrics`` (its fetches and ingests); gauges read from the
database (feeds by state, queue lag) describe the whole cluster. Cluster-wide chores such as retention
run once per period across all workers: the first worker to take the database lock and see the period
elapsed does it, the others skip.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from monitor.errors import MonitorError
from monitor.storage import Storage

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
FETCHES = Counter(
    "monitor_fetches",
    "HTTP fetches by kind (feed, page) and outcome (ok or the failure kind)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
FETCH_SECONDS = Histogram(
    "monitor_fetch_duration_seconds",
    "Time to fetch a feed or a page",
    ["kind"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ARTICLES = Counter(
    "monitor_articles_ingested",
    "Articles stored, by how they were placed "
    "(near_copy = near-copies flagged, new_story = stories created, story_match)",
    ["method"],
    registry=REGISTRY,
)
STORIES_MERGED = Counter("monitor_stories_merged", "Stories merged into another", registry=REGISTRY)
FEEDS = Gauge("monitor_feeds", "Feeds by state, cluster-wide", ["state"], registry=REGISTRY)
QUEUE_LAG = Gauge("monitor_queue_lag_seconds", "How overdue the most overdue enabled feed is", registry=REGISTRY)
POOL_IN_USE = Gauge(
    "monitor_db_pool_connections_in_use", "Database connections checked out in this process", registry=REGISTRY
)
POOL_SIZE = Gauge("monitor_db_pool_size", "Database connection pool size of this process", registry=REGISTRY)


def refresh_gauges(storage: Storage) -> None:
    now = datetime.now(UTC)
    with storage.repository() as repo:
        counts = {"ok": 0, "failing": 0, "disabled": 0}
        lag = 0.0
        for feed in repo.feeds():
            state = "disabled" if not feed.enabled else ("failing" if feed.consecutive_failures else "ok")
            counts[state] += 1
            if feed.enabled:
                lag = max(lag, (now - feed.next_fetch_at).total_seconds())
    for state, count in counts.items():
        FEEDS.labels(state=state).set(count)
    QUEUE_LAG.set(lag)
    pool: Any = storage.engine.pool
    if hasattr(pool, "checkedout"):
        POOL_IN_USE.set(pool.checkedout())
        POOL_SIZE.set(pool.size())


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


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the feed and URL when the record carries them."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("feed", "url", "digest"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "alembic", "trafilatura", "htmldate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # "skipped: already running" is normal


def retention(storage: Storage, keep: timedelta, every: timedelta = timedelta(hours=24)) -> dict[str, int] | None:
    """Prune raw HTML and fetch history older than ``keep`` (articles and stories stay), at most once per
    ``every`` across all workers. Returns what was pruned, or None when another worker did it already."""
    now = datetime.now(UTC)
    with storage.repository() as repo:
        if not repo.try_cluster_lock("retention"):
            return None
        last = repo.get_meta("retention_at")
        if last and now - datetime.fromisoformat(last) < every:
            return None
        pruned = repo.prune(now - keep)
        repo.set_meta("retention_at", now.isoformat())
    log.info("retention: %s", pruned)
    return pruned
