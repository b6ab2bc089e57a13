"""A worker: poll due feeds, record their items, fetch and ingest the articles. Every failure is
recorded against its feed or item, and none stops the rest."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import time
import uuid
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from monitor.config import Settings
from monitor.daemon.policy import ITEM_RETRY_BASE, adaptive_interval, failure_delay, success_delay
from monitor.errors import ExtractionError, FeedError, FetchError, InvalidURL, MonitorError
from monitor.fetch.client import FEED_TYPES, PAGE_TYPES, Fetcher, Response
from monitor.fetch.feeds import ParsedFeed, body_hash, parse_feed
from monitor.fetch.politeness import max_age_seconds
from monitor.fetch.robots import RobotsCache
from monitor.ops.metrics import ARTICLES, FETCH_SECONDS, FETCHES
from monitor.pipeline.placement import BATCH, Ingestor, Outcome
from monitor.pipeline.prepare import Incoming, Prepared, prepare
from monitor.storage import Feed, Repository, Storage

log = logging.getLogger(__name__)

_PERMANENT_STATUSES = {404, 410, 451}


_PERMANENT_KINDS = ("refused", "content_type", "too_large", "robots", "invalid")


MAX_ERROR_CHARS = 2000  # an error message kept in last_error


LEASE_RENEWALS = 3  # a live worker renews its leases this many times per lease


# Placement waits this long for a batch to fill (unless one is full): reads, writes and the cluster lock are
# paid once per batch, and batches of the few articles extracted during one placement cost about twice as
# much CPU per article as batches of 20. One worker on the scale-out benchmark: 43 -> 57 articles/s.
PLACE_GATHER_SECONDS = 0.05


@dataclass
class CycleReport:
    feeds_ok: int = 0
    feeds_failed: int = 0
    items_new: int = 0
    articles_added: int = 0
    items_failed: int = 0
    stories_merged: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PendingItem:
    id: int
    url: str | None
    feed_id: int
    title: str | None
    published_at: datetime | None
    robots: bool  # obey robots.txt for this item's page (the feed's setting)
    outlet: str | None  # the feed's outlet, credited as the article's source


def _now() -> datetime:
    return datetime.now(UTC)


class Worker:
    """One cycle = poll feeds, then ingest their pending items; every failure is recorded, none stops it."""

    def __init__(self, settings: Settings, storage: Storage, fetcher: Fetcher, ingestor: Ingestor) -> None:
        self.settings = settings
        self.storage = storage
        self.fetcher = fetcher
        self.ingestor = ingestor
        self.robots = RobotsCache(fetcher)
        self._cpu: Executor = self._new_executor()
        self._ready: list[_Ready] = []
        self._placing: asyncio.Task[None] | None = None
        self._full = asyncio.Event()  # a whole batch is ready
        self._fetching: dict[str, asyncio.Task[None]] = {}  # URL -> the task fetching and ingesting it
        self.token = uuid.uuid4().hex  # names this worker's leases: only it may settle what it holds
        self._renewing: asyncio.Task[None] | None = None
        self._feed_names: dict[int, str] = {}  # for log lines, as of the last claim

    def close(self) -> None:
        """Stop renewing and hand back what this worker holds, so others need not wait for the leases."""
        if self._renewing is not None:
            self._renewing.cancel()
        self._cpu.shutdown(wait=False, cancel_futures=True)
        try:
            with self.storage.repository() as repo:
                repo.release_leases(self.token)
        except MonitorError as e:  # the database gone: the leases will simply expire
            log.warning("could not release this worker's leases: %s", e)

    def _renew_leases(self) -> None:
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """While this worker lives, its leases do not run out; a dead worker's do, within the lease."""
        lease = timedelta(seconds=self.settings.lease_seconds)
        while True:
            await asyncio.sleep(self.settings.lease_seconds / LEASE_RENEWALS)
            try:
                await asyncio.to_thread(self._renew, _now() + lease)
            except MonitorError as e:
                log.warning("lease renewal failed: %s", e)

    def _renew(self, until: datetime) -> None:
        with self.storage.repository() as repo:
            repo.renew_leases(self.token, until)

    async def cycle(self, *, only_due: bool) -> CycleReport:
        report = CycleReport()
        now = _now()
        lease = timedelta(seconds=self.settings.lease_seconds)
        self._renew_leases()
        # Database work runs in threads: the event loop stays free to start requests on time.
        feeds = await asyncio.to_thread(self._claim_feeds, now, lease, only_due)
        await asyncio.gather(*(self._poll(feed, report) for feed in feeds))
        await self.drain(report)
        return report

    async def drain(self, report: CycleReport) -> None:
        """Ingest pending items until none is left. Items are claimed in batches, so several workers share
        a backlog, and the next batch is claimed while the last half of the current one is still being
        fetched, extracted and placed: extraction and placement never wait for a round's slowest fetch."""
        lease = timedelta(seconds=self.settings.lease_seconds)
        window = self.settings.global_concurrency * 4
        self._renew_leases()
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
            return repo.feeds_leased(_now()) > 0

    def _claim_feeds(self, now: datetime, lease: timedelta, only_due: bool) -> list[Feed]:
        with self.storage.repository() as repo:
            return repo.claim_feeds(now, lease, self.token, only_due=only_due)

    def _claim_items(self, lease: timedelta, limit: int, report: CycleReport) -> list[PendingItem]:
        with self.storage.repository() as repo:
            feeds = {f.id: f for f in repo.feeds()}
            self._feed_names = {f.id: f.name for f in feeds.values()}
            claimed, given_up = repo.claim_pending_items(
                _now(), lease, self.token, limit=limit, max_attempts=self.settings.item_max_attempts
            )
            for item in given_up:
                log.warning("item %s: %s", item.url, item.last_error, extra={"url": item.url})
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

    async def _poll(self, feed: Feed, report: CycleReport) -> None:
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
                    parse_feed, feed.url, response, max_items=self.settings.max_items_per_feed, now=_now()
                )
            )
        except Exception as e:  # the feed's boundary: whatever went wrong stays with this feed
            error = e if isinstance(e, FetchError | FeedError) else FeedError(feed.url, "internal", _describe(e))
            FETCHES.labels(kind="feed", outcome=error.kind).inc()
            FETCH_SECONDS.labels(kind="feed").observe(time.monotonic() - started)
            report.feeds_failed += 1
            report.errors.append(f"feed {feed.name!r}: {error}")
            log.warning("feed %s failed: %s", feed.name, error, extra={"feed": feed.name, "url": feed.url})
            await asyncio.to_thread(self._record_feed_failure, feed.id, error)
            return
        FETCHES.labels(kind="feed", outcome="ok").inc()
        FETCH_SECONDS.labels(kind="feed").observe(time.monotonic() - started)
        report.feeds_ok += 1
        if parsed is not None:
            for entry in parsed.refused:
                log.warning(
                    "feed %s: item refused: %s", feed.name, entry.error, extra={"feed": feed.name, "url": feed.url}
                )
                report.items_failed += 1
                report.errors.append(f"feed {feed.name!r}: item refused: {entry.error}")
        new = await asyncio.to_thread(self._record_feed_success, feed.id, response, parsed)
        report.items_new += new  # not `+= await`: that reads the counter before the await

    def _record_feed_success(self, feed_id: int, response: Response, parsed: ParsedFeed | None) -> int:
        """Record new items and advance the feed's validators and schedule; returns how many items were new."""
        now = _now()
        new = 0
        with self.storage.repository() as repo:
            row = repo.held_feed(feed_id, self.token)
            if row is None:  # the lease was lost: the worker that took the feed over records it
                log.warning("feed %d: lease taken over by another worker, result dropped", feed_id)
                return 0
            hints = [max_age_seconds(response.headers.get("cache-control"))]
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
                hints.append(parsed.ttl_minutes * 60.0 if parsed.ttl_minutes else None)
            row.consecutive_failures = 0
            row.failing_since = None
            row.lease_until, row.lease_owner = None, None
            row.last_success_at = now
            row.next_fetch_at = now + success_delay(
                row.current_interval_s or row.interval_s, hints, cap_s=self.settings.max_interval_s()
            )
        return new

    def _record_feed_failure(self, feed_id: int, error: FetchError | FeedError) -> None:
        now = _now()
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
            row.next_fetch_at = now + failure_delay(row.interval_s, row.consecutive_failures, retry_after)
            if not row.enabled:
                log.error(
                    "feed %s disabled: %s", row.name, row.disabled_reason, extra={"feed": row.name, "url": row.url}
                )

    async def _ingest_url(self, items: list[PendingItem], report: CycleReport) -> None:
        first = items[0]
        ids = [item.id for item in items]
        assert first.url is not None
        started = time.monotonic()
        try:
            if any(item.robots for item in items) and not await self.robots.allowed(first.url):
                raise FetchError(first.url, "robots", "disallowed by the site's robots.txt")
            response = await self.fetcher.get(first.url, accept=PAGE_TYPES)
            incoming = Incoming(
                url=response.url,
                fetched_at=_now(),
                title=first.title,
                html=response.text(),
                published_at=first.published_at,
                source=first.outlet,
                feed_id=first.feed_id,
            )
            prepared = await self._prepare(incoming)
            outcome = await self._store(prepared, ids)
        except FetchError as e:
            FETCHES.labels(kind="page", outcome=e.kind).inc()
            permanent = e.status in _PERMANENT_STATUSES or e.kind in _PERMANENT_KINDS
            await self._settle(ids, report, error=str(e), retry=not permanent)
        except (ExtractionError, InvalidURL) as e:
            FETCHES.labels(kind="page", outcome="no_text").inc()
            await self._settle(ids, report, error=str(e))
        except Exception as e:  # the item's boundary: retried with backoff, failed after the last attempt
            FETCHES.labels(kind="page", outcome="internal").inc()
            await self._settle(ids, report, error=f"{first.url}: internal: {_describe(e)}", retry=True)
        else:
            FETCHES.labels(kind="page", outcome="ok").inc()
            FETCH_SECONDS.labels(kind="page").observe(time.monotonic() - started)
            if outcome.created:
                ARTICLES.labels(method=outcome.method).inc()
                report.articles_added += 1

    async def _prepare(self, incoming: Incoming) -> Prepared:
        """Extraction within MONITOR_EXTRACT_TIMEOUT: a page that takes longer fails (extract_timeout) and
        its executor is replaced, so one pathological page cannot stall the worker. A process pool whose
        process died is rebuilt, and the item tried again later."""
        executor = self._cpu
        future = asyncio.get_running_loop().run_in_executor(executor, prepare, incoming, self.ingestor.params)
        try:
            return await asyncio.wait_for(future, self.settings.extract_timeout)
        except TimeoutError as e:
            self._replace_executor(executor)
            raise ExtractionError(
                incoming.url, f"extract_timeout: extraction took over {self.settings.extract_timeout:g} s"
            ) from e
        except BrokenExecutor as e:
            self._replace_executor(executor)
            raise FetchError(incoming.url, "extract_crashed", "the extraction process died; retried later") from e

    def _replace_executor(self, broken: Executor) -> None:
        """A new executor for what comes next. Processes of the old one are ended; a thread cannot be, so a
        stuck one is left to finish on its own while a fresh thread serves the rest."""
        if self._cpu is not broken:  # replaced already by another item's timeout
            return
        self._cpu = self._new_executor()
        if isinstance(broken, ProcessPoolExecutor):
            for process in list(getattr(broken, "_processes", {}).values()):  # no public way to end a stuck task
                process.kill()
        broken.shutdown(wait=False, cancel_futures=True)

    def _new_executor(self) -> Executor:
        # Extraction is CPU-bound: one thread for it keeps the event loop responsive (GIL). With
        # MONITOR_EXTRACT_PROCESSES it runs in that many processes instead, so one worker uses more cores.
        if self.settings.extract_processes:
            context = multiprocessing.get_context("spawn")
            return ProcessPoolExecutor(self.settings.extract_processes, mp_context=context)
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract")

    async def _store(self, prepared: Prepared, item_ids: list[int]) -> Outcome:
        """Articles extracted while a placement runs, or within PLACE_GATHER_SECONDS of the next one, are
        placed together: one transaction and one turn of the cluster's placement lock for the lot, in which
        their feed items are marked done too."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._ready.append(_Ready(prepared, item_ids, future))
        if len(self._ready) >= BATCH:
            self._full.set()
        if self._placing is None or self._placing.done():
            self._placing = asyncio.create_task(self._place_ready())
        return await future

    async def _place_ready(self) -> None:
        while self._ready:
            if len(self._ready) < BATCH:  # let a batch gather: a batch's fixed cost is most of a small one's
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), PLACE_GATHER_SECONDS)
            self._full.clear()
            batch, self._ready = self._ready[:BATCH], self._ready[BATCH:]
            try:
                outcomes = await asyncio.to_thread(self._place, batch)
            except Exception as e:
                if len(batch) == 1:
                    _settle_future(batch[0].future, error=e)
                    continue
                for ready in batch:  # one by one, so a failure stays with its own article
                    try:
                        _settle_future(ready.future, (await asyncio.to_thread(self._place, [ready]))[0])
                    except Exception as single:
                        _settle_future(ready.future, error=single)
            else:
                for ready, outcome in zip(batch, outcomes, strict=True):
                    _settle_future(ready.future, outcome)

    def _place(self, batch: list[_Ready]) -> list[Outcome]:
        def items_done(repo: Repository, outcomes: list[Outcome]) -> None:
            repo.finish_items(
                [
                    (item, outcome.article_id)
                    for ready, outcome in zip(batch, outcomes, strict=True)
                    for item in ready.item_ids
                ],
                self.token,
            )

        return self.ingestor.store_many([ready.prepared for ready in batch], then=items_done)

    def _settle_known(self, by_url: dict[str | None, list[PendingItem]]) -> None:
        """Mark done the items whose article is stored already, and take them out of ``by_url``."""
        with self.storage.repository() as repo:
            known = repo.article_ids_by_url(url for url in by_url if url is not None)
            repo.finish_items([(item.id, known[url]) for url in known for item in by_url.pop(url)], self.token)

    async def _settle(self, item_ids: list[int], report: CycleReport, *, error: str, retry: bool = False) -> None:
        """Items whose article could not be had: retried later with backoff, or given up and reported."""
        given_up = await asyncio.to_thread(self._fail_items, item_ids, error, retry)
        report.items_failed += len(given_up)
        report.errors.extend(given_up)

    def _fail_items(self, item_ids: list[int], error: str, retry: bool) -> list[str]:
        """Record the failure; returns the errors of items given up for good."""
        given_up: list[str] = []
        with self.storage.repository() as repo:
            for item in repo.held_items(item_ids, self.token):  # one taken over is the other worker's to settle
                item.last_error = error[:MAX_ERROR_CHARS]
                item.lease_until, item.lease_owner = None, None
                feed = self._feed_names.get(item.feed_id, "?")
                log.warning("feed %s: item %s: %s", feed, item.url, error, extra={"feed": feed, "url": item.url})
                if retry and item.attempts < self.settings.item_max_attempts:
                    item.next_attempt_at = _now() + ITEM_RETRY_BASE * 2 ** (item.attempts - 1)
                else:
                    item.state = "failed"
                    given_up.append(f"item {item.url}: {error}")
        return given_up


@dataclass(frozen=True)
class _Ready:
    """An extracted article waiting for placement, with the feed items it settles."""

    prepared: Prepared
    item_ids: list[int]
    future: asyncio.Future[Outcome]


def _describe(error: BaseException) -> str:
    """An unexpected error in one line, for the log and the item's last_error: its type and message."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}"[:MAX_ERROR_CHARS] if message else type(error).__name__


def _settle_future(
    future: asyncio.Future[Outcome], outcome: Outcome | None = None, *, error: Exception | None = None
) -> None:
    if future.done():  # its fetch was cancelled meanwhile (shutdown)
        return
    if outcome is not None:
        future.set_result(outcome)
    else:
        future.set_exception(error or RuntimeError("placement gave no outcome"))
