"""Placement in batches: articles extracted while a placement runs, or within PLACE_GATHER_SECONDS of the
next one, are placed together, in one transaction and one turn of the cluster's placement lock, in which
their feed items are marked done too."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from monitor.pipeline.placement import BATCH, Ingestor, Outcome
from monitor.pipeline.prepare import Prepared
from monitor.storage import Repository

# Placement waits this long for a batch to fill (unless one is full): reads, writes and the cluster lock are
# paid once per batch, and batches of the few articles extracted during one placement cost about twice as
# much CPU per article as batches of 20. One worker on the scale-out benchmark: 43 -> 57 articles/s.
PLACE_GATHER_SECONDS = 0.05


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

    async def store(self, prepared: Prepared, item_ids: list[int]) -> Outcome:
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


def _settle(future: asyncio.Future[Outcome], outcome: Outcome | None = None, *, error: Exception | None = None) -> None:
    if future.done():  # its fetch was cancelled meanwhile (shutdown)
        return
    if outcome is not None:
        future.set_result(outcome)
    else:
        future.set_exception(error or RuntimeError("placement gave no outcome"))
