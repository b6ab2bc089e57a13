"""Article text and metadata from an HTML page, with trafilatura.

Boilerplate (navigation, related links, comments, footer) is left out; the canonical link the
page declares, when there is one, becomes the article's identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin

import trafilatura
from lxml import html as lxml_html
from trafilatura.settings import Document

from monitor.errors import ExtractionError
from monitor.fetch.urls import canonical_url

MIN_TEXT_CHARS = 200


@dataclass(frozen=True)
class Extracted:
    text: str
    title: str | None
    author: str | None
    published_at: datetime | None
    site_name: str | None
    language: str | None
    canonical_url: str | None


def extract(html: str, url: str) -> Extracted:
    """Raise ExtractionError (with the URL) when the page yields no usable article text."""
    try:
        doc = trafilatura.bare_extraction(
            html, url=url, with_metadata=True, include_comments=False, include_tables=False, favor_precision=True
        )
    except Exception as e:  # trafilatura raises many kinds on hostile markup
        raise ExtractionError(url, f"extraction failed: {type(e).__name__}: {e}") from e
    if not isinstance(doc, Document):
        raise ExtractionError(url, "no article found in the page")
    text = (doc.text or "").strip()
    if len(text) < MIN_TEXT_CHARS:
        raise ExtractionError(url, f"no article text found ({len(text)} characters)")
    return Extracted(
        text=text,
        title=_clean(doc.title),
        author=_clean(doc.author),
        published_at=_parse_date(doc.date),
        site_name=_clean(doc.sitename),
        language=_page_language(html) or _clean(getattr(doc, "language", None)),
        canonical_url=_canonical_link(html, url),
    )


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_LANG = re.compile(r"<html[^>]*\blang=[\"']?([a-zA-Z]{2,3})", re.I)


def _page_language(html: str) -> str | None:
    match = _LANG.search(html[:5000])
    return match.group(1).lower() if match else None


def _canonical_link(html: str, url: str) -> str | None:
    try:
        tree = lxml_html.fromstring(html)
    except (ValueError, lxml_html.etree.ParserError):
        return None
    for href in tree.xpath("//link[@rel='canonical']/@href"):
        href = str(href).strip()
        if href.startswith(("http://", "https://", "/")):
            try:
                declared = canonical_url(urljoin(url, href))
            except ValueError:  # urljoin on a broken IPv6 literal
                continue
            if isinstance(declared, str):
                return declared
    return None
