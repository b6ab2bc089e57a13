"""RSS and Atom bodies into feed items: untrusted bytes in, one entry per item out, never an exception
for one bad item."""

from __future__ import annotations

import calendar
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser

from monitor.errors import FeedError
from monitor.fetch.client import Response
from monitor.fetch.urls import RefusedURL, absolute_url, canonical_url, quoted_controls
from monitor.limits import MAX_TITLE_CHARS, MAX_URL_CHARS, clip, without_controls


@dataclass(frozen=True)
class FeedEntry:
    guid: str
    url: str | None
    title: str | None
    published_at: datetime | None
    error: str | None = None  # an item that cannot be fetched (its link is unusable): recorded as failed


@dataclass
class ParsedFeed:
    entries: list[FeedEntry] = field(default_factory=list)
    title: str | None = None
    ttl_minutes: int | None = None
    warning: str | None = None  # a bozo feed that still had items

    @property
    def refused(self) -> list[FeedEntry]:
        return [entry for entry in self.entries if entry.error]


_CHALLENGE = re.compile(rb"cf-challenge|challenge-platform|just a moment\.\.\.|captcha|attention required", re.I)


def parse_feed(url: str, response: Response, *, max_items: int, now: datetime) -> ParsedFeed:
    """Entries of an RSS/Atom body; FeedError when the body is not a feed at all.

    The body goes to feedparser as a stream: given bytes that look like a path or a URL, feedparser
    would open that file or fetch that address itself."""
    try:
        parsed: Any = feedparser.parse(
            io.BytesIO(response.body), response_headers={"content-type": response.headers.get("content-type", "")}
        )
    except Exception as e:  # feedparser's own guard is bozo; anything escaping it is a parse failure too
        raise FeedError(url, "parse", f"not a parseable feed: {type(e).__name__}: {e}") from e
    head = response.body[:2048].lstrip().lower()
    if not parsed.entries:
        if _CHALLENGE.search(response.body[:20000]):
            raise FeedError(url, "challenge", "a bot-challenge page was served instead of the feed")
        if head.startswith((b"<!doctype html", b"<html")) or "html" in response.content_type:
            raise FeedError(url, "not_a_feed", "an HTML page was served instead of a feed")
        if parsed.bozo and not parsed.version:
            raise FeedError(url, "parse", f"not a parseable feed: {parsed.bozo_exception}")
    entries: list[FeedEntry] = []
    seen: set[tuple[str, str | None]] = set()
    for raw in parsed.entries[:max_items]:
        entry = _entry(response.url, raw, now)
        if (entry.guid, entry.url) not in seen:  # a GUID repeated with another link is another article
            seen.add((entry.guid, entry.url))
            entries.append(entry)
    ttl = parsed.feed.get("ttl")
    return ParsedFeed(
        entries=entries,
        title=parsed.feed.get("title"),
        # "²" is a digit to isdigit(), not to int(); a ttl of thousands of digits is more than int() reads
        ttl_minutes=int(ttl) if isinstance(ttl, str) and ttl.isascii() and ttl.isdigit() and len(ttl) < 10 else None,
        warning=f"malformed feed, items used anyway: {parsed.bozo_exception}" if parsed.bozo else None,
    )


def _entry(base: str, raw: Any, now: datetime) -> FeedEntry:
    """One item; an unusable link makes it an entry with an error, never an exception."""
    link = raw.get("link")
    title = clip(str(raw["title"]), MAX_TITLE_CHARS) if raw.get("title") else None
    error = None
    url: str | None = None
    if link:
        absolute = absolute_url(str(link), base)
        canonical = canonical_url(absolute)
        if isinstance(canonical, RefusedURL):
            url, error = clip(quoted_controls(absolute.strip()), MAX_URL_CHARS), str(canonical)
        else:
            url = canonical
    guid = str(raw.get("id") or url or _digest(str(raw.get("title", "")), str(raw.get("summary", ""))))
    return FeedEntry(
        guid=without_controls(guid)[:MAX_URL_CHARS],
        url=url,
        title=title,
        published_at=_entry_time(raw, now),
        error=error,
    )


def _entry_time(raw: Any, now: datetime) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = raw.get(key)
        if value:
            try:
                moment = datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
            except (OverflowError, ValueError, TypeError):
                continue
            # A date far in the future is a publisher's mistake, not a scheduling hint.
            return min(moment, now + timedelta(hours=1))
    return None


def _digest(*parts: str) -> str:
    return "sha1:" + hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
