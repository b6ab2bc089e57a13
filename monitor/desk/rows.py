"""What the desk shows, as plain records whose field names are the SQL contract's, and their JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar

ITEM_STATES = ("pending", "done", "failed")


T = TypeVar("T")


@dataclass(frozen=True)
class StoryRow:
    id: int
    title: str
    first_published_at: datetime
    last_published_at: datetime
    article_count: int
    original_count: int
    outlet_count: int
    outlets: list[str]


@dataclass(frozen=True)
class Segment:
    """A piece of a search snippet; ``match`` when it is a word of the query."""

    text: str
    match: bool


@dataclass(frozen=True)
class SearchHit:
    story: StoryRow
    article_id: int
    source: str
    title: list[Segment]
    snippet: list[Segment]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int
    # False when counting stopped early (more than ``total`` match): an exact count of a large listing
    # scans every row it counts, which the first page of a million stories cannot afford.
    total_exact: bool = True

    @property
    def next_offset(self) -> int | None:
        end = self.offset + self.limit
        more = end < self.total if self.total_exact else end <= self.total
        return end if more else None


@dataclass(frozen=True)
class ArticleRow:
    id: int
    url: str
    title: str
    source: str
    published_at: datetime
    story_id: int
    duplicate_of_id: int | None
    duplicate_similarity: float | None
    placement_method: str
    placement_score: float | None
    matched_story_id: int | None
    matched_article_id: int | None
    feed_id: int | None


@dataclass(frozen=True)
class Coverage:
    """An original article and the near-copies collapsed under it."""

    article: ArticleRow
    copies: list[ArticleRow]


@dataclass(frozen=True)
class MergedStory:
    id: int
    title: str
    merged_into_id: int
    merge_score: float | None
    updated_at: datetime


@dataclass(frozen=True)
class StoryEventRow:
    """A story_events row as the story shown sees it. Articles flow from ``other_story_id`` to ``story_id``
    when one moves or a story splits off, and from ``story_id`` to ``other_story_id`` in a merge; ``incoming``
    says they came into the story shown, ``counterpart_id`` is the story on the other side."""

    at: datetime
    kind: str
    story_id: int
    other_story_id: int | None
    article_id: int | None
    score: float | None
    reason: str
    incoming: bool
    counterpart_id: int | None
    counterpart_title: str | None
    article_title: str | None


@dataclass(frozen=True)
class DigestMention:
    """A sent digest that carried the story (digest_run_stories), and where in it."""

    digest: str
    period_end: datetime
    sent_at: datetime | None
    rank: int


@dataclass(frozen=True)
class StoryDetail:
    id: int
    title: str
    lead: str
    first_published_at: datetime
    last_published_at: datetime
    article_count: int
    original_count: int
    outlet_count: int
    merged_into_id: int | None
    merge_score: float | None
    articles: list[ArticleRow]
    merged_from: list[MergedStory]
    digests: list[DigestMention]
    history: list[StoryEventRow]

    def coverage(self) -> list[Coverage]:
        """Originals in publication order, each near-copy under the original it copies (a copy of a copy
        under the first original)."""
        by_id = {a.id: a for a in self.articles}

        def root(article: ArticleRow) -> int:
            seen = {article.id}
            while article.duplicate_of_id is not None and article.duplicate_of_id in by_id:
                article = by_id[article.duplicate_of_id]
                if article.id in seen:
                    break
                seen.add(article.id)
            return article.id

        copies: dict[int, list[ArticleRow]] = {}
        for article in self.articles:
            if article.duplicate_of_id is not None:
                copies.setdefault(root(article), []).append(article)
        originals = [a for a in self.articles if a.duplicate_of_id is None or a.duplicate_of_id not in by_id]
        return [Coverage(a, copies.get(a.id, [])) for a in originals]


@dataclass(frozen=True)
class FeedRow:
    id: int
    name: str
    url: str
    outlet: str | None
    tags: list[str]
    enabled: bool
    disabled_reason: str | None
    interval_s: int
    current_interval_s: int | None
    next_fetch_at: datetime
    # interval, adaptive, cache_control, ttl, backoff, retry_after (feeds.next_fetch_reason; where that is
    # null, a feed not fetched since migration 0014: backoff if failing, else interval)
    next_fetch_reason: str
    next_fetch_delay_s: int | None  # the delay that reason asked for, before jitter
    consecutive_failures: int
    failing_since: datetime | None
    last_error: str | None
    last_error_kind: str | None
    last_success_at: datetime | None
    pending_items: int
    failed_items: int
    state: str  # ok, failing, disabled


@dataclass(frozen=True)
class ItemRow:
    id: int
    feed_id: int
    feed: str
    guid: str
    url: str | None
    title: str | None
    published_at: datetime | None
    seen_at: datetime
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    article_id: int | None


@dataclass(frozen=True)
class RunRow:
    id: int
    digest: str
    period_start: datetime
    period_end: datetime
    state: str
    attempts: int
    last_error: str | None
    story_count: int | None
    message_id: str | None
    sent_at: datetime | None


def plain(value: Any) -> Any:
    """Dataclasses to JSON-ready values: ISO 8601 times with their offset, field names unchanged."""
    if isinstance(value, Page):
        return {
            "items": plain(value.items),
            "total": value.total,
            "offset": value.offset,
            "limit": value.limit,
            "next_offset": value.next_offset,
            "total_exact": value.total_exact,
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def to_json(value: Any) -> str:
    return json.dumps(plain(value), ensure_ascii=False, indent=2)


def plural(count: int, singular: str, plural: str | None = None) -> str:
    """ "1 story", "2 stories": counts read as a person would write them."""
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"
