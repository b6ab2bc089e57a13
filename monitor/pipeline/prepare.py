"""Preparing an article, fetched or imported: extraction, canonical identity, signature and term counts.

Pure CPU and no database, so it runs off the event loop, in a thread or in other processes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from monitor import grouping
from monitor.errors import InvalidURL
from monitor.extraction import extract
from monitor.fetch.urls import RefusedURL, canonical_link_refusal, canonical_url, host_of
from monitor.grouping import nearcopy
from monitor.limits import MAX_AUTHOR_CHARS, MAX_OUTLET_CHARS, MAX_SITE_NAME_CHARS, MAX_TITLE_CHARS, clip
from monitor.storage import NewArticle


@dataclass(frozen=True)
class Incoming:
    """An article as it arrives: from a feed item plus its page, or from an import line."""

    url: str
    fetched_at: datetime
    title: str | None = None
    text: str | None = None
    html: str | None = None
    published_at: datetime | None = None
    source: str | None = None
    feed_id: int | None = None
    language: str | None = None


@dataclass(frozen=True)
class Prepared:
    article: NewArticle
    signature: nearcopy.Signature
    counts: Counter[str]
    own_url: str  # the URL it was fetched or imported under; article.url differs when a canonical link was taken


def prepare(incoming: Incoming, params: grouping.StoryParams) -> Prepared:
    """Extract (when given HTML) and compute everything placement needs; raises ExtractionError.

    Pure CPU and no database: it runs in a thread or in another process (MONITOR_EXTRACT_PROCESSES)."""
    own = canonical_url(incoming.url)
    if isinstance(own, RefusedURL):
        raise InvalidURL(incoming.url, own.reason)
    url = own
    title, text, published = incoming.title, incoming.text, incoming.published_at
    author = site = note = None
    language = incoming.language
    if incoming.html is not None:
        page = extract(incoming.html, own, title=incoming.title)
        if page.canonical_url and page.canonical_url != own:
            note = canonical_link_refusal(page.canonical_url, own)
            url = own if note else page.canonical_url
        text = page.text
        title = title or page.title
        published = published or page.published_at
        author, site, language = page.author, page.site_name, page.language or language
    text = (text or "").replace("\x00", "").strip()  # PostgreSQL text cannot hold NUL; clip() takes it out of the rest
    title = clip((title or "").strip(), MAX_TITLE_CHARS) or text.split("\n", 1)[0][:200]
    signature = nearcopy.signature(text)
    article = NewArticle(
        url=url,
        title=title,
        text=text,
        source=clip(incoming.source or site or host_of(url), MAX_OUTLET_CHARS) or host_of(url),
        site_name=clip(site, MAX_SITE_NAME_CHARS),
        canonical_note=note,
        author=clip(author, MAX_AUTHOR_CHARS),
        published_at=published or incoming.fetched_at,
        fetched_at=incoming.fetched_at,
        event_date=grouping.event_date(title, text, published or incoming.fetched_at, params),
        language=language,
        feed_id=incoming.feed_id,
        raw_html=incoming.html,
        minhash=signature.minhash,
        shingle_count=signature.shingle_count,
    )
    return Prepared(article, signature, grouping.term_counts(title, text, params), own)
