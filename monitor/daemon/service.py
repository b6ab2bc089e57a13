"""The service: start-up checks, `run --once`, and the daemon with its scheduled jobs.

APScheduler only ticks: each tick asks the database what is due."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from monitor.config import Settings, load_digests, load_feeds
from monitor.daemon.report import CycleReport, describe, now_utc, placed
from monitor.daemon.worker import Worker
from monitor.digests.periods import scheduled_end
from monitor.digests.runs import Digester, warn_unknown_outlets
from monitor.errors import MonitorError, StorageError
from monitor.fetch.client import Fetcher
from monitor.ops.health import HealthServer
from monitor.ops.metrics import REGROUPING_PASSES, STORIES_MERGED
from monitor.ops.retention import retention
from monitor.pipeline.placement import Ingestor
from monitor.storage import Storage

if TYPE_CHECKING:
    from monitor.web import WebServer

log = logging.getLogger(__name__)

GIL_SWITCH_SECONDS = 0.001


_T = TypeVar("_T")


async def _in_thread(what: str, work: Callable[[], _T]) -> _T | None:
    """A scheduled job's work, off the event loop; any error is logged in one line and the daemon goes on."""
    try:
        return await asyncio.to_thread(work)
    except Exception as e:
        log.error("%s failed: %s", what, e if isinstance(e, MonitorError) else describe(e))
        return None


@contextmanager
def _single_sqlite_daemon(storage: Storage) -> Iterator[None]:
    """SQLite is for one daemon: a second one on the same file is refused, with the reason."""
    database = storage.engine.url.database
    if storage.engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    try:
        lock = open(f"{database}.daemon.lock", "a+", encoding="utf-8")  # noqa: SIM115  (closed by the with below)
    except OSError as e:  # the database's directory missing or not writable: SQLite could not open it either
        raise StorageError(f"cannot open {database}.daemon.lock beside the SQLite database: {e.strerror}") from e
    with lock as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise StorageError(
                f"another monitor daemon (pid {holder}) is already running on {database}; SQLite takes one daemon "
                "at a time: use PostgreSQL (MONITOR_DATABASE_URL=postgresql+psycopg://...) to run several workers"
            ) from e
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def daemon(settings: Settings) -> Iterator[tuple[Storage, Ingestor]]:
    """Validate feeds.yaml, hold the SQLite single-daemon lock, bring the schema up to date (or refuse),
    and sync the feeds table."""
    feeds = load_feeds(settings.feeds_file, settings.default_interval)
    warn_unknown_outlets(load_digests(settings.feeds_file), feeds)  # a bad digest stops start-up too
    # The placement thread makes many short database round trips while it holds the cluster-wide lock;
    # after each it waits for the GIL behind the extraction thread, up to the switch interval (5 ms by
    # default). A shorter one keeps the lock held for less time: two workers ran about 10 % faster.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    storage = Storage(settings.database_url)
    try:
        with _single_sqlite_daemon(storage):
            storage.ensure_schema(upgrade=settings.auto_upgrade)
            with storage.repository() as repo:
                repo.sync_feeds(feeds)
                if storage.engine.dialect.name == "sqlite":
                    repo.release_leases()  # we are the only daemon: leases left by a killed run are stale
            yield storage, Ingestor(storage, settings.story_params())
    finally:
        storage.close()


async def run_once(settings: Settings) -> CycleReport:
    with daemon(settings) as (storage, ingestor):
        async with Fetcher(settings) as fetcher:
            worker = Worker(settings, storage, fetcher, ingestor)
            try:
                report = await worker.cycle(only_due=False)
                # Workers started together: the feeds this one could not claim are being polled by others;
                # help with the items they record until every feed is back.
                while await asyncio.to_thread(worker.others_polling):
                    await asyncio.sleep(0.5)
                    await worker.drain(report)
                await worker.drain(report)
                await worker.batcher.finish()
            finally:
                worker.close()
        # From cron, --once is the whole service: the safety-net pass runs when the daemons' would have.
        merges = await asyncio.to_thread(ingestor.merge_young_stories, schedule_fired(settings.merge_schedule))
        report.stories_merged = len(merges or [])
        await asyncio.to_thread(count_stories, storage, report)
        return report


def count_stories(storage: Storage, report: CycleReport) -> None:
    """The stories the cycle's articles are in once it is over: regrouping may have joined the ones they
    began, so the count of placements that began a story would overstate them."""
    if report.added_ids:
        with storage.repository() as repo:
            report.stories = len(repo.stories_holding(report.added_ids))


def _web_server(settings: Settings) -> WebServer:
    from monitor.web import WebServer  # the web stack is imported only by daemons that serve it

    assert settings.web_port is not None
    return WebServer(settings, settings.http_host, settings.web_port)


def schedule_fired(schedule: str, offset: timedelta = timedelta(0)) -> Callable[[datetime | None, datetime], bool]:
    """Whether a cron schedule has fired between a job's last run (None: never run) and now. Every worker
    fires the schedule; asked under a cluster-wide lock, this lets the first run the job and the others
    find it done for the period, even when their clocks differ by a few seconds. ``offset``: the schedule is
    read on the daemon's clock (see ``_OnClock``), while the times asked about are wall-clock ones."""
    trigger = CronTrigger.from_crontab(schedule, timezone=UTC)

    def due(last: datetime | None, now: datetime) -> bool:
        if last is None:
            return True
        fires = trigger.get_next_fire_time(None, last + offset)
        return fires is not None and fires <= now + offset

    return due


class _OnClock(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 is untyped
    """A cron schedule read on the daemon's clock, ``offset`` from the wall clock the scheduler waits on: zero
    in service; a test sets it so that a cron minute begins a few seconds after start-up, not up to 60 s later."""

    def __init__(self, schedule: str, timezone: str | tzinfo, offset: timedelta) -> None:
        self.trigger = CronTrigger.from_crontab(schedule, timezone=timezone)
        self.offset = offset

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        fire: datetime | None = self.trigger.get_next_fire_time(
            None if previous is None else previous + self.offset, now + self.offset
        )
        return None if fire is None else fire - self.offset


async def run_forever(
    settings: Settings, stop: asyncio.Event | None = None, clock_offset: timedelta = timedelta(0)
) -> None:
    """Tick every MONITOR_POLL_SECONDS until SIGTERM/SIGINT; the cycle in flight finishes first. The signals
    are ours before start-up work begins, so a Ctrl-C during it is an orderly stop too. The cron jobs
    (digests, regrouping pass) read the wall clock plus ``clock_offset``: tests set it so as not to wait
    for a minute to begin."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with daemon(settings) as (storage, ingestor):
        await _serve(settings, storage, ingestor, stop, clock_offset)
    log.info("monitor stopped")


async def _serve(
    settings: Settings, storage: Storage, ingestor: Ingestor, stop: asyncio.Event, clock_offset: timedelta
) -> None:
    async with Fetcher(settings) as fetcher:
        worker = Worker(settings, storage, fetcher, ingestor)
        running: set[asyncio.Task[CycleReport]] = set()

        async def tick() -> None:
            if running or stop.is_set():
                return
            task = asyncio.create_task(worker.cycle(only_due=True))
            running.add(task)
            try:
                report = await task
                await asyncio.to_thread(count_stories, storage, report)
                busy = report.items_new or report.feeds_failed or report.items_failed
                log.log(
                    logging.INFO if busy else logging.DEBUG,
                    "cycle: %d feeds ok, %d failed, %d new items, %s",
                    report.feeds_ok,
                    report.feeds_failed,
                    report.items_new,
                    placed(report),
                )
            except Exception as e:  # the database gone, say: logged in one line, the next tick tries again
                log.error("cycle failed: %s", e if isinstance(e, MonitorError) else describe(e))
            except asyncio.CancelledError:  # stopping: unfinished items stay pending in the database
                log.info("cycle stopped with the daemon; its unfinished items stay pending")
            finally:
                running.discard(task)

        digester = Digester(settings, storage, load_digests(settings.feeds_file))

        async def send_digest(name: str) -> None:
            # the run is named after the scheduled time, not when this worker got round to it
            end = scheduled_end(digester.digests[name], now_utc() + clock_offset)
            await _in_thread(f"digest {name}", functools.partial(digester.run, name, end))

        async def retry_digests() -> None:
            await _in_thread("digest retries", digester.retry_due)

        scheduler = AsyncIOScheduler(timezone=UTC)
        for config in digester.digests.values():
            scheduler.add_job(
                send_digest,
                _OnClock(config.schedule, config.timezone, clock_offset),
                args=[config.name],
                coalesce=True,
                misfire_grace_time=3600,
                max_instances=1,
            )
        scheduler.add_job(retry_digests, "interval", seconds=60, coalesce=True, max_instances=1)

        async def prune() -> None:
            await _in_thread(
                "retention", functools.partial(retention, storage, timedelta(days=settings.retention_days))
            )

        scheduler.add_job(
            prune, "interval", hours=1, next_run_time=now_utc() + timedelta(minutes=1), coalesce=True, max_instances=1
        )

        merge_due = schedule_fired(settings.merge_schedule, clock_offset)

        async def merge() -> None:
            merges = await _in_thread("regrouping pass", functools.partial(ingestor.merge_young_stories, merge_due))
            if merges is not None:  # None: another worker ran this period's pass (or it failed, logged)
                REGROUPING_PASSES.inc()
            if merges:
                STORIES_MERGED.inc(len(merges))
                log.info("regrouping pass: %d stories merged into others", len(merges))

        scheduler.add_job(
            merge,
            _OnClock(settings.merge_schedule, UTC, clock_offset),
            coalesce=True,
            misfire_grace_time=3600,
            max_instances=1,
        )
        health = HealthServer(storage, settings.http_host, settings.http_port) if settings.http_port else None
        if health:
            health.start()
            log.info("health and metrics on http://%s:%d/metrics", settings.http_host, health.port)
        web = _web_server(settings) if settings.web_port else None
        if web:
            web.start()
            log.info("the analyst's desk on http://%s:%d/", settings.http_host, settings.web_port)
        scheduler.add_job(
            tick,
            "interval",
            seconds=settings.poll_seconds,
            next_run_time=now_utc(),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        scheduler.start()
        log.info(
            "monitor running on %s with %s; SIGTERM or Ctrl-C to stop",
            storage.display_url,
            settings.feeds_file,
        )
        await stop.wait()
        scheduler.shutdown(wait=False)
        if health:
            health.stop()
        if web:
            web.stop()
        if running:
            _done, pending = await asyncio.wait(running, timeout=5)
            for task in pending:  # unfinished items stay 'pending' in the database: released, not lost
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await worker.batcher.finish()  # what this worker placed is grouped again before it goes
        worker.close()
