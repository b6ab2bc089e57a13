"""Prometheus metrics of this process, and cluster-wide gauges read from the database on scrape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.storage import Storage

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
REGROUPING_PASSES = Counter(
    "monitor_regrouping_passes",
    "Regrouping safety-net passes this worker ran (one per period in the cluster)",
    registry=REGISTRY,
)


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
