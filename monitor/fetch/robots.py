"""robots.txt per host, through the same guarded, polite fetcher."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from monitor.errors import FetchError
from monitor.fetch.client import Fetcher


class RobotsCache:
    """robots.txt per host, fetched through the same guarded, polite fetcher, kept for a day.

    As search engines do: a missing robots.txt (4xx) allows everything; an unreachable one (5xx,
    network) is treated as a temporary "not now", so the article is retried later.
    """

    TTL = timedelta(hours=24)

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._rules: dict[str, tuple[datetime, RobotFileParser]] = {}
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        async with self._locks[origin]:
            cached = self._rules.get(origin)
            if cached is None or datetime.now(UTC) - cached[0] > self.TTL:
                cached = (datetime.now(UTC), await self._load(origin))
                self._rules[origin] = cached
        return cached[1].can_fetch(self.fetcher.settings.user_agent, url)

    async def _load(self, origin: str) -> RobotFileParser:
        parser = RobotFileParser(origin + "/robots.txt")
        try:
            response = await self.fetcher.get(origin + "/robots.txt", accept=("text/", "application/octet-stream"))
        except FetchError as e:
            if e.status is not None and 400 <= e.status < 500:
                parser.parse([])
                return parser
            raise FetchError(origin + "/robots.txt", e.kind, f"robots.txt unavailable: {e}", status=e.status) from e
        parser.parse(response.text().splitlines())
        return parser
