"""A story as placement sees it: its members, the running sum of their vectors, its span and event date."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol

from monitor.grouping.features import add_to_centroid
from monitor.grouping.params import StoryParams


@dataclass(frozen=True)
class Candidate:
    story_id: int
    centroid: Mapping[str, float]
    first_published_at: datetime
    last_published_at: datetime
    event_date: date | None = None
    originals: int = 0  # members summed in the centroid (reprints are not); 0: score by the cosine alone


@dataclass(frozen=True)
class Member:
    """What a story needs to know of one of its articles to summarise itself."""

    article_id: int
    published_at: datetime
    source: str
    title: str
    event_date: date | None
    duplicate: bool


class _Dated(Protocol):
    """What the dates of a story are read from: a ``Member`` as placement keeps it, or a ``Placed``."""

    @property
    def published_at(self) -> datetime: ...

    @property
    def event_date(self) -> date | None: ...


def _span_and_event(articles: Iterable[_Dated]) -> tuple[datetime, datetime, date | None]:
    """First and last publication of a story's articles, and its event date (``majority_date``)."""
    listed = list(articles)
    moments = [a.published_at for a in listed]
    first = min(moments)
    return first, max(moments), majority_date([a.event_date for a in listed if a.event_date is not None], first)


# Two event dates agree when the merge rule would let them meet (StoryParams.date_gap_days).
_AGREE = timedelta(days=StoryParams().date_gap_days)


def majority_date(dates: list[date], first: datetime) -> date | None:
    """The date most members agree on, so that one lead quoting a background date (a 2005 precedent in a
    2008 story) does not date the story: the member date that most others agree with, among equals the
    nearest the first report; then the lower median of the dates that agree with it."""
    if not dates:
        return None
    ordered = sorted(dates)
    day = first.date()

    def standing(d: date) -> tuple[int, int, date]:
        support = bisect_right(ordered, d + _AGREE) - bisect_left(ordered, d - _AGREE)
        return support, -abs((d - day).days), d

    anchor = max(ordered, key=standing)
    agreeing = [d for d in ordered if abs(d - anchor) <= _AGREE]
    return agreeing[(len(agreeing) - 1) // 2]


@dataclass
class StoryState:
    """A story's running summary, kept while a batch of articles is placed and then written back."""

    story_id: int
    title: str
    centroid: dict[str, float]
    members: list[Member]
    _indexed: tuple[dict[str, float], list[tuple[str, float]]] | None = field(default=None, repr=False, compare=False)
    _summarised: tuple[tuple[list[Member], int], tuple[datetime, datetime, date | None, int]] | None = field(
        default=None, repr=False, compare=False
    )

    def add(self, member: Member, vector: Mapping[str, float] | None, params: StoryParams) -> None:
        """Take an article in; a reprint (vector None) adds no evidence, so the centroid stays."""
        self.members.append(member)
        if vector is not None:
            self.centroid = add_to_centroid(self.centroid, vector, params)

    @property
    def first_published_at(self) -> datetime:
        return self._summary()[0]

    @property
    def last_published_at(self) -> datetime:
        return self._summary()[1]

    @property
    def outlet_count(self) -> int:
        return len({m.source for m in self.members})

    @property
    def event_date(self) -> date | None:
        return self._summary()[2]

    @property
    def originals(self) -> int:
        return self._summary()[3]

    def _summary(self) -> tuple[datetime, datetime, date | None, int]:
        """First and last publication, event date (``majority_date`` of the members'), originals. Cached
        while the member list stays the same list of the same length (members are only ever appended):
        placement asks for every story a batch touched, for every article of the batch."""
        key = (self.members, len(self.members))
        if self._summarised is None or self._summarised[0][0] is not key[0] or self._summarised[0][1] != key[1]:
            first, last, event = _span_and_event(self.members)
            self._summarised = (key, (first, last, event, sum(1 for m in self.members if not m.duplicate)))
        return self._summarised[1]

    @property
    def headline(self) -> str:
        """The title of its earliest original article: how the story broke."""
        originals = sorted((m.published_at, m.article_id, m.title) for m in self.members if not m.duplicate)
        return originals[0][2] if originals else self.title

    def candidate(self) -> Candidate:
        return Candidate(
            self.story_id,
            self.centroid,
            self.first_published_at,
            self.last_published_at,
            self.event_date,
            self.originals,
        )

    def index_terms(self, params: StoryParams) -> list[tuple[str, float]]:
        """The centroid's heaviest terms: what finds this story from a new article. Cached for as long as
        the centroid is the same object (every change builds a new one)."""
        if self._indexed is None or self._indexed[0] is not self.centroid:
            top = sorted(self.centroid.items(), key=lambda kv: (-kv[1], kv[0]))[: params.index_terms]
            self._indexed = (self.centroid, top)
        return self._indexed[1]
