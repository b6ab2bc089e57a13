"""A worker: claim due feeds and pending items under its leases, fetch each article once, extract it and
have it placed. Every failure is recorded against its feed or item, and none stops the rest.

Feeds are polled by ``FeedPoller``, extraction runs in the ``Extractor``, placement in the ``Batcher``,
and ``Leases`` keeps what the worker holds alive; this module drives the items.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from monitor.config import Settings
from monitor.daemon.batcher import Batcher
from monitor.daemon.extractor import Extractor
from monitor.daemon.leases import Leases
from monitor.daemon.policy import ITEM_RETRY_BASE
from monitor.daemon.poller import FeedPoller
from monitor.daemon.report import MAX_ERROR_CHARS, CycleReport, describe, now_utc
from monitor.errors import ExtractionError, FetchError, InvalidURL
from monitor.fetch.client import PAGE_TYPES, Fetcher
from monitor.fetch.robots import RobotsCache, RobotsUnavailable
from monitor.ops.metrics import ARTICLES, FETCH_SECONDS, FETCHES
from monitor.pipeline.placement import Ingestor
from monitor.pipeline.prepare import Incoming
from monitor.storage import Storage

log = logging.getLogger(__name__)

_PERMANENT_STATUSES = {404, 410, 451}
_PERMANENT_KINDS = ("refused", "content_type", "too_large", "robots", "invalid")


@dataclass(frozen=True)
class PendingItem:
    id: int
    url: str | None
    feed_id: int
    title: str | None
    published_at: datetime | None
    robots: bool  # obey robots.txt for this item's page (the feed's setting)
    outlet: str | None  # the feed's outlet, credited as the article's source


class Worker:
    """One cycle = poll feeds, then ingest their pending items; every failure is recorded, none stops it."""

    def __init__(self, settings: Settings, storage: Storage, fetcher: Fetcher, ingestor: Ingestor) -> None:
        self.settings = settings
        self.storage = storage
        self.fetcher = fetcher
        self.robots = RobotsCache(fetcher)
        self.leases = Leases(storage, settings.lease_seconds)
        self.poller = FeedPoller(settings, storage, fetcher, self.leases.token)
        self.extractor = Extractor(settings.extract_processes, settings.extract_timeout, ingestor.params)
        self.batcher = Batcher(ingestor, self.leases.token)
        self._fetching: dict[str, asyncio.Task[None]] = {}  # URL -> the task fetching and ingesting it
        self._feed_names: dict[int, str] = {}  # for log lines, as of the last claim

    @property
    def token(self) -> str:
        return self.leases.token

    def close(self) -> None:
        self.extractor.close()
        self.leases.close()

    async def cycle(self, *, only_due: bool) -> CycleReport:
        report = CycleReport()
        self.leases.keep_alive()
        # Database work runs in threads: the event loop stays free to start requests on time.
        feeds = await asyncio.to_thread(self.poller.claim, now_utc(), self.leases.length, only_due=only_due)
        await asyncio.gather(*(self.poller.poll(feed, report) for feed in feeds))
        await self.drain(report)
        return report

    async def drain(self, report: CycleReport) -> None:
        """Ingest pending items until none is left. Items are claimed in batches, so several workers share
        a backlog, and the next batch is claimed while the last half of the current one is still being
        fetched, extracted and placed: extraction and placement never wait for a round's slowest fetch."""
        lease = self.leases.length
        window = self.settings.global_concurrency * 4
        self.leases.keep_alive()
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                claimed = await asyncio.to_thread(self._claim_items, lease, window - len(running), report)
                if claimed:
                    running |= await self._start(claimed, report)
                if not running:
                    if claimed:
                        continue  # all settled without a request: there may be more
                    return
                while running and (len(running) > window // 2 or not claimed):
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # an unexpected error (the database gone) stops the drain
        finally:  # stopped or failed: the rest stay leased in the database, to be claimed again
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _start(self, claimed: list[PendingItem], report: CycleReport) -> set[asyncio.Task[None]]:
        """Settle what needs no request; a task fetching and ingesting each other URL once."""
        # Items of several feeds often share one article: fetch each URL once, settle all its items.
        by_url: dict[str | None, list[PendingItem]] = {}
        for item in claimed:
            by_url.setdefault(item.url, []).append(item)
        unlinked = by_url.pop(None, [])
        if unlinked:
            await self._settle([item.id for item in unlinked], report, error="the feed item has no link")
        # Same article under another feed or an earlier fetch: settled without a request.
        await asyncio.to_thread(self._settle_known, by_url)
        tasks: set[asyncio.Task[None]] = set()
        for url, items in by_url.items():
            assert url is not None
            earlier = self._fetching.get(url)  # claimed in an earlier batch, still in flight here
            task = asyncio.create_task(
                self._ingest_after(earlier, url, items, report) if earlier else self._ingest_url(items, report)
            )
            self._fetching[url] = task
            task.add_done_callback(functools.partial(self._forget, url))
            tasks.add(task)
        return tasks

    def _forget(self, url: str, task: asyncio.Task[None]) -> None:
        if self._fetching.get(url) is task:
            del self._fetching[url]

    async def _ingest_after(
        self, earlier: asyncio.Task[None], url: str, items: list[PendingItem], report: CycleReport
    ) -> None:
        """Items whose URL this worker is fetching already: settled by that article once it is stored, or
        fetched themselves if it could not be had."""
        await asyncio.wait({earlier})
        waiting: dict[str | None, list[PendingItem]] = {url: items}
        await asyncio.to_thread(self._settle_known, waiting)
        if waiting:
            await self._ingest_url(items, report)

    def others_polling(self) -> bool:
        """Whether live workers hold feeds right now (their items may still arrive)."""
        with self.storage.repository() as repo:
            return repo.feeds_leased(now_utc()) > 0

    def _claim_items(self, lease: timedelta, limit: int, report: CycleReport) -> list[PendingItem]:
        with self.storage.repository() as repo:
            feeds = {f.id: f for f in repo.feeds()}
            self._feed_names = {f.id: f.name for f in feeds.values()}
            claimed, given_up = repo.claim_pending_items(
                now_utc(), lease, self.token, limit=limit, max_attempts=self.settings.item_max_attempts
            )
            for item in given_up:
                feed = self._feed_names.get(item.feed_id, "?")
                log.warning(
                    "feed %s: item %s: %s", feed, item.url, item.last_error, extra={"feed": feed, "url": item.url}
                )
                report.items_failed += 1
                report.errors.append(f"item {item.url}: {item.last_error}")
            return [
                PendingItem(
                    row.id,
                    row.url,
                    row.feed_id,
                    row.title,
                    row.published_at,
                    feeds[row.feed_id].robots if row.feed_id in feeds else True,
                    feeds[row.feed_id].outlet if row.feed_id in feeds else None,
                )
                for row in claimed
            ]

    async def _ingest_url(self, items: list[PendingItem], report: CycleReport) -> None:
        first = items[0]
        ids = [item.id for item in items]
        assert first.url is not None
        started = time.monotonic()
        try:
            feed = self._feed_names.get(first.feed_id, "?")
            if any(item.robots for item in items) and not await self.robots.allowed(first.url, feed=feed):
                raise FetchError(first.url, "robots", "disallowed by the site's robots.txt")
            response = await self.fetcher.get(first.url, accept=PAGE_TYPES)
            incoming = Incoming(
                url=response.url,
                fetched_at=now_utc(),
                title=first.title,
                html=response.text(),
                published_at=first.published_at,
                source=first.outlet,
                feed_id=first.feed_id,
            )
            prepared = await self.extractor.prepare(incoming)
            outcome = await self.batcher.store(prepared, ids)
        except FetchError as e:
            FETCHES.labels(kind="page", outcome=e.kind).inc()
            permanent = e.status in _PERMANENT_STATUSES or e.kind in _PERMANENT_KINDS
            # An unreadable robots.txt was logged once for its site, not again for each of its pages.
            logged = isinstance(e, RobotsUnavailable)
            await self._settle(ids, report, error=str(e), retry=not permanent, logged=logged)
        except (ExtractionError, InvalidURL) as e:
            FETCHES.labels(kind="page", outcome="no_text").inc()
            await self._settle(ids, report, error=str(e))
        except Exception as e:  # the item's boundary: retried with backoff, failed after the last attempt
            FETCHES.labels(kind="page", outcome="internal").inc()
            await self._settle(ids, report, error=f"{first.url}: internal: {describe(e)}", retry=True)
        else:
            FETCHES.labels(kind="page", outcome="ok").inc()
            FETCH_SECONDS.labels(kind="page").observe(time.monotonic() - started)
            if outcome.created:
                ARTICLES.labels(method=outcome.method).inc()
                report.added_ids.append(outcome.article_id)
                report.near_copies += outcome.method == "near_copy"

    def _settle_known(self, by_url: dict[str | None, list[PendingItem]]) -> None:
        """Mark done the items whose article is stored already, and take them out of ``by_url``."""
        with self.storage.repository() as repo:
            known = repo.article_ids_by_url(url for url in by_url if url is not None)
            repo.finish_items([(item.id, known[url]) for url in known for item in by_url.pop(url)], self.token)

    async def _settle(
        self, item_ids: list[int], report: CycleReport, *, error: str, retry: bool = False, logged: bool = False
    ) -> None:
        """Items whose article could not be had: retried later with backoff, or given up and reported;
        each logged unless ``logged`` says the cause was already."""
        given_up = await asyncio.to_thread(self._fail_items, item_ids, error, retry, logged)
        report.items_failed += len(given_up)
        report.errors.extend(given_up)

    def _fail_items(self, item_ids: list[int], error: str, retry: bool, logged: bool) -> list[str]:
        """Record the failure; returns the errors of items given up for good."""
        given_up: list[str] = []
        with self.storage.repository() as repo:
            for item in repo.held_items(item_ids, self.token):  # one taken over is the other worker's to settle
                item.last_error = error[:MAX_ERROR_CHARS]
                item.lease_until, item.lease_owner = None, None
                feed = self._feed_names.get(item.feed_id, "?")
                where = {"feed": feed, "url": item.url}
                if retry and item.attempts < self.settings.item_max_attempts:
                    item.next_attempt_at = now_utc() + ITEM_RETRY_BASE * 2 ** (item.attempts - 1)
                    if not logged:
                        log.warning("feed %s: item %s: %s", feed, item.url, error, extra=where)
                else:  # given up: said once, whoever logged the cause
                    item.state = "failed"
                    given_up.append(f"item {item.url}: {error}")
                    log.warning("feed %s: item %s given up: %s", feed, item.url, error, extra=where)
        return given_up
