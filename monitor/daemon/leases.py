"""A worker's leases: one token names everything it holds; renewed while it lives, handed back when it
stops, left to run out when it dies, so that another worker takes the work over within the lease."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from monitor.daemon.report import now_utc
from monitor.errors import MonitorError
from monitor.storage import Storage

log = logging.getLogger(__name__)

RENEWALS = 3  # a live worker renews its leases this many times per lease


class Leases:
    def __init__(self, storage: Storage, lease_seconds: float) -> None:
        self.storage = storage
        self.seconds = lease_seconds
        self.token = uuid.uuid4().hex
        self._renewing: asyncio.Task[None] | None = None

    @property
    def length(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def keep_alive(self) -> None:
        """Renew from now on (idempotent): called whenever the worker is about to take work."""
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / RENEWALS)
            try:
                await asyncio.to_thread(self._renew, now_utc() + self.length)
            except MonitorError as e:
                log.warning("lease renewal failed: %s", e)

    def _renew(self, until: datetime) -> None:
        with self.storage.repository() as repo:
            repo.renew_leases(self.token, until)

    def close(self) -> None:
        """Stop renewing and hand back what this worker holds, so others need not wait for the leases."""
        if self._renewing is not None:
            self._renewing.cancel()
        try:
            with self.storage.repository() as repo:
                repo.release_leases(self.token)
        except MonitorError as e:  # the database gone: the leases will simply expire
            log.warning("could not release this worker's leases: %s", e)
