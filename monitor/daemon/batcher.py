"""Placement in batches: articles extracted while a placement runs, or within PLACE_GATHER_SECONDS of the
next one, are placed together, in one transaction and one turn of the cluster's placement lock, in which
their feed items are marked done too. The stories a burst touched are grouped again once it has ended (no
article for SETTLE_IDLE_SECONDS), and every SETTLE_SECONDS while it lasts: once per burst, not per batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from monitor.daemon.report import describe
from monitor.errors import MonitorError
from monitor.pipeline.placement import BATCH, Ingestor, Outcome
from monitor.pipeline.prepare import Prepared
from monitor.storage import Repository

log = logging.getLogger(__name__)

# Placement waits this long for a batch to fill (unless one is full): reads, writes and the cluster lock are
# paid once per batch, and batches of the few articles extracted during one placement cost about twice as
# much CPU per article as batches of 20. One worker on the scale-out benchmark: 43 -> 57 articles/s.
PLACE_GATHER_SECONDS = 0.05
# Regrouping (Ingestor.settle) waits for the burst to end: extraction is usually slower than placement, so
# the queue runs dry after nearly every batch, and regrouping then would cost its full price per batch.
SETTLE_IDLE_SECONDS = 1.0  # no article placed for this long: the burst has ended
SETTLE_SECONDS = 30.0  # a long burst (a backlog) is grouped again at least this often


@dataclass(frozen=True)
class _Ready:
    """An extracted article waiting for placement, with the feed items it settles."""

    prepared: Prepared
    item_ids: list[int]
    future: asyncio.Future[Outcome]


class Batcher:
    def __init__(self, ingestor: Ingestor, lease_token: str) -> None:
        self.ingestor = ingestor
        self.token = lease_token  # items are marked done only while this worker holds them
        self._ready: list[_Ready] = []
        self._placing: asyncio.Task[None] | None = None
        self._full = asyncio.Event()  # a whole batch is ready
        self._arrived = asyncio.Event()  # an article is ready
        self._unsettled_since: float | None = None  # first placement not grouped again yet

    async def store(self, prepared: Prepared, item_ids: list[int]) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._ready.append(_Ready(prepared, item_ids, future))
        self._arrived.set()
        if len(self._ready) >= BATCH:
            self._full.set()
        if self._placing is None or self._placing.done():
            self._placing = asyncio.create_task(self._place_ready())
        return await future

    async def _place_ready(self) -> None:
        while True:
            await self._place_queued()
            if self._unsettled_since is None:
                return
            self._arrived.clear()
            try:  # the burst may go on: placing comes first, regrouping when it has ended
                await asyncio.wait_for(self._arrived.wait(), SETTLE_IDLE_SECONDS)
            except TimeoutError:
                await self.settle()  # articles that arrive meanwhile are placed by the next turn

    async def _place_queued(self) -> None:
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
                    _settle(batch[0].future, error=e)
                    continue
                for ready in batch:  # one by one, so a failure stays with its own article
                    try:
                        _settle(ready.future, (await asyncio.to_thread(self._place, [ready]))[0])
                    except Exception as single:
                        _settle(ready.future, error=single)
            else:
                for ready, outcome in zip(batch, outcomes, strict=True):
                    _settle(ready.future, outcome)
            now = time.monotonic()
            if self._unsettled_since is None:
                self._unsettled_since = now
            elif now - self._unsettled_since >= SETTLE_SECONDS:
                await self.settle()

    async def settle(self) -> None:
        """Group again what was placed since the last time. A failure is logged; the stories wait for the
        next time, or the periodic pass."""
        self._unsettled_since = None
        try:
            await asyncio.to_thread(self.ingestor.settle)
        except Exception as e:
            log.error("regrouping failed, left to the next one: %s", e if isinstance(e, MonitorError) else describe(e))

    async def finish(self) -> None:
        """Wait for what is being placed, and group it again: before the worker stops or reports."""
        if self._placing is not None:
            await asyncio.gather(self._placing, return_exceptions=True)
        if self.ingestor.unsettled:
            await self.settle()

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

        return self.ingestor.store_many([ready.prepared for ready in batch], then=items_done, regroup=False)


def _settle(future: asyncio.Future[Outcome], outcome: Outcome | None = None, *, error: Exception | None = None) -> None:
    if future.done():  # its fetch was cancelled meanwhile (shutdown)
        return
    if outcome is not None:
        future.set_result(outcome)
    else:
        future.set_exception(error or RuntimeError("placement gave no outcome"))
