"""When to fetch again: the feed schedule's arithmetic, pure and separately tested.

Schedule state lives in the database (``feeds.next_fetch_at``, validators, failure counters), so a
restart continues where it was; these functions only say how far to push it."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

ITEM_RETRY_BASE = timedelta(minutes=5)


MAX_FEED_BACKOFF = timedelta(days=1)


MAX_RETRY_AFTER = timedelta(days=1)


def _jittered(delay: timedelta) -> timedelta:
    """±10 % so feeds added together do not stay aligned."""
    return delay * random.uniform(0.9, 1.1)


def adaptive_interval(published: list[datetime | None], now: datetime, *, floor_s: int, ceiling_s: int) -> int:
    """Poll about as often as the feed publishes: the time its recent items span, divided by their number.

    Only the last week counts. Never more often than the feed's configured interval (the floor), never
    less often than the ceiling.
    """
    recent = [moment for moment in published if moment is not None and now - timedelta(days=7) <= moment <= now]
    rate_s = (now - min(recent)).total_seconds() / len(recent) if recent else float(ceiling_s)
    return int(min(max(rate_s, floor_s), max(ceiling_s, floor_s)))


def success_delay(interval_s: int, hints_s: list[float | None], *, cap_s: int) -> timedelta:
    """The interval, stretched by what the server asks (Cache-Control max-age, RSS ttl), each capped."""
    asked = [min(hint, cap_s) for hint in hints_s if hint]
    return _jittered(timedelta(seconds=max([interval_s, *asked])))


def failure_delay(interval_s: int, failures: int, retry_after_s: float | None) -> timedelta:
    """Exponential backoff from the interval, capped at a day; a server's Retry-After (capped too) wins if longer."""
    backoff = min(timedelta(seconds=interval_s) * 2 ** min(failures, 10), MAX_FEED_BACKOFF)
    if retry_after_s is not None:
        backoff = max(backoff, min(timedelta(seconds=retry_after_s), MAX_RETRY_AFTER))
    return _jittered(backoff)
