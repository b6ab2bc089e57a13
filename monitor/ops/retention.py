"""Retention: raw HTML and settled feed items pruned after MONITOR_RETENTION_DAYS; articles stay."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from monitor.storage import Storage

log = logging.getLogger(__name__)


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
