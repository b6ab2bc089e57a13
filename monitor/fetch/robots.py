"""robots.txt per host, through the same guarded, polite fetcher."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from monitor.errors import FetchError
from monitor.fetch.client import Fetcher

log = logging.getLogger(__name__)


class RobotsUnavailable(FetchError):
    """A site's robots.txt could not be read (5xx, network): its pages wait. Logged once per fetch of the
    robots.txt, not once per page: a site with many waiting pages makes one warning."""

    def __init__(self, robots_url: str, cause: FetchError) -> None:
        reason = str(cause).removeprefix(f"{robots_url}: ")
        super().__init__(robots_url, cause.kind, f"robots.txt unavailable: {reason}", status=cause.status)


class RobotsCache:
    """robots.txt per host, fetched through the same guarded, polite fetcher, kept for a day.

    As search engines do: a missing robots.txt (4xx) allows everything; an unreachable one (5xx,
    network) is treated as a temporary "not now", so the article is retried later. That answer is kept a
    minute, so the other pages of the site waiting in the same drain do not ask again.
    """

    TTL = timedelta(hours=24)
    RETRY = timedelta(minutes=1)

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._rules: dict[str, tuple[datetime, RobotFileParser | FetchError]] = {}
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def allowed(self, url: str, *, feed: str) -> bool:
        """Whether the site's robots.txt lets us fetch ``url``; RobotsUnavailable when it cannot be read.
        ``feed`` (whose item asks) is named in the one warning an unreadable robots.txt makes."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        async with self._locks[origin]:
            cached = self._rules.get(origin)
            if cached is None or datetime.now(UTC) - cached[0] > (
                self.TTL if isinstance(cached[1], RobotFileParser) else self.RETRY
            ):
                cached = (datetime.now(UTC), await self._load(origin, feed))
                self._rules[origin] = cached
        rules = cached[1]
        if isinstance(rules, FetchError):
            raise RobotsUnavailable(origin + "/robots.txt", rules)  # a new one each time: tracebacks stay apart
        return rules.can_fetch(self.fetcher.settings.user_agent, url)

    async def _load(self, origin: str, feed: str) -> RobotFileParser | FetchError:
        """The parsed rules, or the error that kept robots.txt from being read (logged here, once)."""
        parser = RobotFileParser(origin + "/robots.txt")
        try:
            response = await self.fetcher.get(origin + "/robots.txt", accept=("text/", "application/octet-stream"))
        except FetchError as e:
            if e.status is not None and 400 <= e.status < 500:
                parser.parse([])
                return parser
            log.warning(
                "feed %s: robots.txt of %s unavailable, the site's pages wait and are retried later: %s",
                feed,
                urlsplit(origin).netloc,
                e,
                extra={"feed": feed, "url": origin + "/robots.txt"},
            )
            return e
        parser.parse(response.text().splitlines())
        return parser
