"""Polling feeds: fetch each due feed (conditional GET), record its new items, and move its schedule.

Items are recorded before their pages are fetched, in the same transaction that advances the feed's
validators, so a crash re-reads the feed and loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

from monitor.config import Settings
from monitor.daemon.policy import NextFetch, adaptive_interval, failure_delay, success_delay
from monitor.daemon.report import MAX_ERROR_CHARS, CycleReport, describe, now_utc
from monitor.errors import FeedError, FetchError
from monitor.fetch.client import FEED_TYPES, Fetcher, Response
from monitor.fetch.feeds import ParsedFeed, body_hash, parse_feed
from monitor.fetch.politeness import max_age_seconds
from monitor.ops.metrics import FETCH_SECONDS, FETCHES
from monitor.storage import Feed, Storage

log = logging.getLogger(__name__)


class FeedPoller:
    def __init__(self, settings: Settings, storage: Storage, fetcher: Fetcher, lease_token: str) -> None:
        self.settings, self.storage, self.fetcher = settings, storage, fetcher
        self.token = lease_token  # a feed is settled only while this worker holds it

    def claim(self, at: datetime, lease: timedelta, *, only_due: bool) -> list[Feed]:
        with self.storage.repository() as repo:
            return repo.claim_feeds(at, lease, self.token, only_due=only_due)

    async def poll(self, feed: Feed, report: CycleReport) -> None:
        """Fetch one feed and record its new items. Whatever goes wrong, fetching it or recording what it
        said, stays with this feed: recorded as its failure, its lease handed back, the others untouched."""
        headers = {}
        if feed.etag:
            headers["If-None-Match"] = feed.etag
        if feed.last_modified:
            headers["If-Modified-Since"] = feed.last_modified
        started = time.monotonic()
        try:
            response = await self.fetcher.get(feed.url, accept=FEED_TYPES, headers=headers)
            unchanged = response.status == 304 or body_hash(response.body) == feed.body_hash
            parsed = (
                None
                if unchanged
                else await asyncio.to_thread(
                    parse_feed, feed.url, response, max_items=self.settings.max_items_per_feed, now=now_utc()
                )
            )
        except Exception as e:  # the feed's boundary
            error = _as_feed_error(feed, e)
            FETCHES.labels(kind="feed", outcome=error.kind).inc()
            FETCH_SECONDS.labels(kind="feed").observe(time.monotonic() - started)
            await self._failed(feed, error, report)
            return
        FETCHES.labels(kind="feed", outcome="ok").inc()
        FETCH_SECONDS.labels(kind="feed").observe(time.monotonic() - started)
        try:
            new = await asyncio.to_thread(self._record_feed_success, feed.id, response, parsed)
        except Exception as e:  # the feed's boundary, recording included
            await self._failed(feed, _as_feed_error(feed, e), report)
            return
        report.feeds_ok += 1
        report.items_new += new  # not `+= await`: that reads the counter before the await
        for entry in parsed.refused if parsed is not None else ():
            log.warning("feed %s: item refused: %s", feed.name, entry.error, extra={"feed": feed.name, "url": feed.url})
            report.items_failed += 1
            report.errors.append(f"feed {feed.name!r}: item refused: {entry.error}")

    async def _failed(self, feed: Feed, error: FetchError | FeedError, report: CycleReport) -> None:
        """Count, log once and record a feed's failure; if even that cannot be written, hand its lease back
        so that the feed is tried again rather than renewed forever by this worker."""
        report.feeds_failed += 1
        report.errors.append(f"feed {feed.name!r}: {error}")
        log.warning("feed %s failed: %s", feed.name, error, extra={"feed": feed.name, "url": feed.url})
        try:
            await asyncio.to_thread(self._record_feed_failure, feed.id, error)
        except Exception as e:
            log.error(
                "feed %s: its failure could not be recorded: %s", feed.name, describe(e), extra={"feed": feed.name}
            )
            try:
                await asyncio.to_thread(self._release, feed.id)
            except Exception:  # the database is unreachable: the lease goes back when this worker stops
                log.error("feed %s: its lease could not be handed back", feed.name, extra={"feed": feed.name})

    def _release(self, feed_id: int) -> None:
        with self.storage.repository() as repo:
            row = repo.held_feed(feed_id, self.token)
            if row is not None:
                row.lease_until, row.lease_owner = None, None

    def _record_feed_success(self, feed_id: int, response: Response, parsed: ParsedFeed | None) -> int:
        """Record new items and advance the feed's validators and schedule; returns how many items were new."""
        now = now_utc()
        new = 0
        with self.storage.repository() as repo:
            row = repo.held_feed(feed_id, self.token)
            if row is None:  # the lease was lost: the worker that took the feed over records it
                log.warning("feed %d: lease taken over by another worker, result dropped", feed_id)
                return 0
            hints: dict[str, float | None] = {"cache_control": max_age_seconds(response.headers.get("cache-control"))}
            if parsed is not None:
                # Items first, validators after (same transaction): a crash re-reads the feed, losing nothing.
                new = repo.record_items(feed_id, parsed.entries, now)
                row.etag = response.headers.get("etag")[:512] if response.headers.get("etag") else None
                row.last_modified = (response.headers.get("last-modified") or "")[:128] or None
                row.body_hash = body_hash(response.body)
                row.last_error = parsed.warning
                if parsed.refused:
                    first = parsed.refused[0].error
                    row.last_error = f"{len(parsed.refused)} item(s) refused, first: {first}"
                    row.last_error_kind, row.last_error_at = "invalid", now
                row.current_interval_s = adaptive_interval(
                    [e.published_at for e in parsed.entries],
                    now,
                    floor_s=row.interval_s,
                    ceiling_s=self.settings.max_interval_s(),
                )
                hints["ttl"] = parsed.ttl_minutes * 60.0 if parsed.ttl_minutes else None
            row.consecutive_failures = 0
            row.failing_since = None
            row.lease_until, row.lease_owner = None, None
            row.last_success_at = now
            _schedule(
                row,
                now,
                success_delay(row.interval_s, row.current_interval_s, hints, cap_s=self.settings.max_interval_s()),
            )
        return new

    def _record_feed_failure(self, feed_id: int, error: FetchError | FeedError) -> None:
        now = now_utc()
        with self.storage.repository() as repo:
            row = repo.held_feed(feed_id, self.token)
            if row is None:
                log.warning("feed %d: lease taken over by another worker, failure not recorded", feed_id)
                return
            row.consecutive_failures += 1
            row.failing_since = row.failing_since or now
            row.lease_until, row.lease_owner = None, None
            row.last_error, row.last_error_kind, row.last_error_at = str(error)[:MAX_ERROR_CHARS], error.kind, now
            status = error.status if isinstance(error, FetchError) else None
            if status == 410:
                row.enabled, row.disabled_reason = False, f"410 Gone at {now:%Y-%m-%d %H:%M}Z"
            elif now - row.failing_since > timedelta(days=self.settings.disable_after_days):
                row.enabled = False
                row.disabled_reason = (
                    f"failing since {row.failing_since:%Y-%m-%d %H:%M}Z "
                    f"({row.consecutive_failures} failures), last: {error}"
                )
            retry_after = error.retry_after if isinstance(error, FetchError) else None
            _schedule(row, now, failure_delay(row.interval_s, row.consecutive_failures, retry_after))
            if not row.enabled:
                log.error(
                    "feed %s disabled: %s", row.name, row.disabled_reason, extra={"feed": row.name, "url": row.url}
                )


def _schedule(row: Feed, now: datetime, upcoming: NextFetch) -> None:
    """Move the feed's next fetch, keeping why it is then for ``monitor feeds`` and the Flux page."""
    row.next_fetch_at = now + upcoming.delay
    row.next_fetch_reason, row.next_fetch_delay_s = upcoming.reason, upcoming.seconds


def _as_feed_error(feed: Feed, e: Exception) -> FetchError | FeedError:
    """The project's errors as they are; any other, from a library or a bug, as this feed's ``internal`` one."""
    return e if isinstance(e, FetchError | FeedError) else FeedError(feed.url, "internal", describe(e))
