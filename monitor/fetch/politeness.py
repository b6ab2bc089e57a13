"""Politeness: one budget per host (spacing and concurrency), and what servers ask (Retry-After, max-age)."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import defaultdict
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class HostBudget:
    """Politeness: at most ``concurrency`` requests per host at once, request starts spaced by ``min_interval``.

    ``acquire``/``release`` hold the concurrency caps (per host and global) around a whole request;
    ``space`` runs from httpcore's trace hook, right before the request is written on its connection,
    so the spacing holds on the wire even when the process is busy.
    """

    def __init__(self, min_interval: float, concurrency: int, global_concurrency: int) -> None:
        self.min_interval = min_interval
        self._global = asyncio.Semaphore(global_concurrency)
        self._per_host: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(concurrency))
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._last_start: dict[str, float] = {}

    async def acquire(self, host: str) -> None:
        await self._per_host[host].acquire()
        await self._global.acquire()

    def release(self, host: str) -> None:
        self._global.release()
        self._per_host[host].release()

    async def space(self, host: str) -> None:
        async with self._locks[host]:
            wait = self._last_start.get(host, -math.inf) + self.min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_start[host] = time.monotonic()


# The longest wait a server's Retry-After is taken at: the feed schedule waits no longer anyway, and a
# 25-digit number or a date in the year 9999 would overflow the timedelta arithmetic that schedules it.
MAX_RETRY_AFTER_S = 86400.0


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), at most ``MAX_RETRY_AFTER_S``;
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit(), not to float()
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        moment = parsedate_to_datetime(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError, OverflowError):  # a year or an offset of 20 digits overflows
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def max_age_seconds(cache_control: str | None) -> float | None:
    match = re.search(r"max-age\s*=\s*(\d+)", cache_control or "", re.I)
    return float(match.group(1)) if match else None
