"""What the pipeline hands the repository and gets back: plain records, no session attached."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True)
class NearCopyCandidate:
    band_key: int
    article_id: int
    story_id: int
    minhash: bytes
    shingle_count: int


@dataclass(frozen=True)
class NewArticle:
    url: str
    title: str
    text: str
    source: str
    author: str | None
    published_at: datetime
    fetched_at: datetime
    event_date: date | None
    language: str | None
    feed_id: int | None
    raw_html: str | None
    minhash: bytes
    shingle_count: int
    site_name: str | None = None
    canonical_note: str | None = None


@dataclass(frozen=True)
class PlacementRecord:
    method: str
    score: float | None
    story_id: int | None  # None: found a new story
    matched_article_id: int | None = None
    duplicate_similarity: float | None = None


@dataclass(frozen=True)
class NewRow:
    """An article placed and about to be written: its reserved id, its story and its vector."""

    article_id: int
    new: NewArticle
    placement: PlacementRecord
    story_id: int
    terms: dict[str, float]
    counts: Mapping[str, float]
