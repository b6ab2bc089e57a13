"""What a digest holds: the period's stories, ranked by outlets then recency, each with its lead and its
coverage (one line per outlet, the representative article first)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from monitor.config import DigestConfig
from monitor.digests.periods import period_start
from monitor.search import parse_query
from monitor.storage import Article, Repository, Storage

_SENTENCE_END = re.compile(r"(?<=[.!?»])\s+(?=[«\"A-ZÀ-ÖØ-Þ0-9])")


@dataclass(frozen=True)
class Coverage:
    source: str
    title: str
    url: str
    published_at: datetime
    copies: tuple[tuple[str, str], ...] = ()  # (outlet, url) of near-copies of this article, collapsed here


@dataclass(frozen=True)
class DigestStory:
    id: int
    title: str
    broke_at: datetime
    outlet_count: int
    lead: str
    coverage: tuple[Coverage, ...]


@dataclass(frozen=True)
class Digest:
    config: DigestConfig
    start: datetime
    end: datetime
    stories: tuple[DigestStory, ...] = field(default_factory=tuple)


def lead_of(text: str, sentences: int = 3, max_chars: int = 420) -> str:
    """The first two or three sentences of an article, cut at a sentence end where possible."""
    parts = [p.strip() for p in _SENTENCE_END.split(" ".join(text.split())) if p.strip()]
    lead = ""
    for part in parts[:sentences]:
        if lead and len(lead) + len(part) > max_chars:
            break
        lead = f"{lead} {part}".strip()
    return lead if len(lead) <= max_chars else lead[: max_chars - 1].rsplit(" ", 1)[0] + "…"


def representative(articles: Sequence[Article], centroid: dict[str, float]) -> Article:
    """The original article closest to the story's centroid: the best summary of the whole coverage."""

    def closeness(article: Article) -> float:
        dot = sum(weight * centroid.get(term, 0.0) for term, weight in article.terms.items())
        norm = math.sqrt(sum(v * v for v in centroid.values())) or 1.0
        return dot / norm

    originals = [a for a in articles if a.duplicate_of_id is None] or list(articles)
    return max(originals, key=lambda a: (closeness(a), -a.id))


def _story(
    repo: Repository, story_id: int, title: str, broke_at: datetime, outlets: int, centroid: dict[str, float]
) -> DigestStory:
    articles = repo.story_articles(story_id)
    copies: dict[int, list[tuple[str, str]]] = {}
    for article in articles:
        if article.duplicate_of_id is not None:
            copies.setdefault(article.duplicate_of_id, []).append((article.source, article.url))
    by_id = {a.id: a for a in articles}
    for copied in list(copies):  # a copy of a copy is listed under the first original
        root = copied
        while by_id.get(root) is not None and by_id[root].duplicate_of_id is not None:
            root = by_id[root].duplicate_of_id  # type: ignore[assignment]
        if root != copied:
            copies.setdefault(root, []).extend(copies.pop(copied))
    coverage, seen_outlets = [], set()
    for article in articles:
        if article.duplicate_of_id is not None:
            continue
        coverage.append(
            Coverage(
                article.source, article.title, article.url, article.published_at, tuple(copies.get(article.id, ()))
            )
        )
        seen_outlets.add(article.source)
    return DigestStory(
        story_id, title, broke_at, outlets, lead_of(representative(articles, centroid).text), tuple(coverage)
    )


def build(storage: Storage, config: DigestConfig, end: datetime, start: datetime | None = None) -> Digest:
    """The digest for the period ending at ``end`` (starting where the schedule says unless ``start`` is given):
    what would be sent, without sending it."""
    start = period_start(config, end) if start is None else start
    with storage.repository() as repo:
        return compose(repo, config, start, end)


def compose(repo: Repository, config: DigestConfig, start: datetime, end: datetime) -> Digest:
    """The digest of ``start``-``end`` read through ``repo`` (the web desk's is read-only)."""
    stories = repo.stories_for_digest(
        start,
        end,
        query=parse_query(config.query) if config.query else None,
        outlets=config.outlets,
        min_outlets=config.min_outlets,
        limit=config.max_stories,
    )
    built = tuple(_story(repo, s.id, s.title, s.first_published_at, s.outlet_count, s.centroid) for s in stories)
    return Digest(config, start, end, built)
