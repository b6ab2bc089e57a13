"""When to fetch again: the feed schedule's arithmetic, pure and separately tested.

Schedule state lives in the database (``feeds.next_fetch_at``, validators, failure counters), so a
restart continues where it was; these functions only say how far to push it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from monitor.fetch.politeness import MAX_RETRY_AFTER_S

ITEM_RETRY_BASE = timedelta(minutes=5)


MAX_FEED_BACKOFF = timedelta(days=1)


# A longer delay is named (adaptive interval, server hint) only past this factor of the configured interval:
# below it, the ±10 % jitter and minute-rounded display make "every 30 min" the truthful explanation.
STRETCHED = 1.25


@dataclass(frozen=True)
class NextFetch:
    """When to fetch a feed again and why, so ``monitor feeds`` can explain a far-off next fetch.

    ``reason`` is one of interval, adaptive, cache_control, ttl (after a success), backoff, retry_after
    (after a failure); ``seconds`` is the delay it asked for, before jitter."""

    delay: timedelta
    reason: str
    seconds: int


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


def success_delay(
    configured_s: int, adaptive_s: int | None, hints_s: dict[str, float | None], *, cap_s: int
) -> NextFetch:
    """The configured interval, stretched by the adaptive one and by what the server asks (``hints_s``:
    cache_control for max-age, ttl for RSS <ttl>; each capped). The longest names the reason, unless it is
    barely longer than configured; on a tie the server's word is named."""
    asked = [(reason, int(min(hint, cap_s))) for reason, hint in hints_s.items() if hint]
    reason, seconds = max([("interval", configured_s), *asked, ("adaptive", adaptive_s or 0)], key=lambda c: c[1])
    if seconds < configured_s * STRETCHED:
        reason = "interval"
    return NextFetch(_jittered(timedelta(seconds=seconds)), reason, seconds)


def failure_delay(interval_s: int, failures: int, retry_after_s: float | None) -> NextFetch:
    """Exponential backoff from the interval, capped at a day; a server's Retry-After (capped too) wins if as long."""
    backoff = min(timedelta(seconds=interval_s) * 2 ** min(failures, 10), MAX_FEED_BACKOFF)
    if retry_after_s is not None and timedelta(seconds=retry_after_s) >= backoff:
        asked = timedelta(seconds=min(retry_after_s, MAX_RETRY_AFTER_S))
        return NextFetch(_jittered(asked), "retry_after", int(asked.total_seconds()))
    return NextFetch(_jittered(backoff), "backoff", int(backoff.total_seconds()))
