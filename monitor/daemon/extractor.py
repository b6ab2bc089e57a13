"""Extraction off the event loop, bounded in time: one pathological page cannot stall a worker."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor

from monitor.errors import ExtractionError, FetchError
from monitor.grouping import StoryParams
from monitor.pipeline.prepare import Incoming, Prepared, prepare


class Extractor:
    """Extraction is CPU-bound: one thread for it keeps the event loop responsive (GIL). With
    MONITOR_EXTRACT_PROCESSES it runs in that many processes instead, so one worker uses more cores."""

    def __init__(self, processes: int, timeout: float, params: StoryParams) -> None:
        self.processes, self.timeout, self.params = processes, timeout, params
        self._executor = self._new_executor()
        # One page per thread or process at a time: pages wait here, not in the executor's queue, so the
        # time limit counts extraction only, and replacing an executor leaves no other page queued in it.
        self._slots = asyncio.Semaphore(max(1, processes))

    async def prepare(self, incoming: Incoming) -> Prepared:
        """Within MONITOR_EXTRACT_TIMEOUT: a page that takes longer fails (extract_timeout) and the executor
        is replaced. A process pool whose process died is rebuilt and the page tried once more at once (the
        process may have died before the page reached it: killed while idle); if that dies too, the page
        fails with extract_crashed and is tried again later."""
        loop = asyncio.get_running_loop()
        retried = False
        async with self._slots:
            while True:
                executor = self._executor
                try:
                    future = loop.run_in_executor(executor, prepare, incoming, self.params)
                    return await asyncio.wait_for(future, self.timeout)
                except TimeoutError as e:
                    self._replace(executor)
                    raise ExtractionError(
                        incoming.url, f"extract_timeout: extraction took over {self.timeout:g} s"
                    ) from e
                except BrokenExecutor as e:
                    self._replace(executor)
                    if retried:
                        raise FetchError(
                            incoming.url, "extract_crashed", "the extraction process died; retried later"
                        ) from e
                    retried = True

    def _replace(self, broken: Executor) -> None:
        """A new executor for what comes next. Processes of the old one are ended; a thread cannot be, so a
        stuck one is left to finish on its own while a fresh thread serves the rest."""
        if self._executor is not broken:  # replaced already by another item's timeout
            return
        self._executor = self._new_executor()
        if isinstance(broken, ProcessPoolExecutor):
            for process in list(getattr(broken, "_processes", {}).values()):  # no public way to end a stuck task
                process.kill()
        broken.shutdown(wait=False, cancel_futures=True)

    def _new_executor(self) -> Executor:
        if self.processes:
            return ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
