"""Greedy placement can start one event's coverage as several stories, or pull an event's first articles
into a neighbour: ``merge_plan`` joins young stories by average-link agglomeration, and ``refine_plan``
then moves every article of the stories it looked at to the one it now scores best in."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from monitor.grouping.features import add_to_centroid, dot
from monitor.grouping.params import StoryParams
from monitor.grouping.scoring import _mixed, _mixed_score
from monitor.grouping.state import Candidate, _span_and_event


@dataclass
class _Group:
    story_id: int
    centroid: dict[str, float]
    first: datetime
    last: datetime
    event: date | None
    count: int


def _link(a: _Group, b: _Group, params: StoryParams) -> float | None:
    """Average similarity between the members of two stories, or None when they may not merge: the
    joined story would span too long, they are too far apart in time, or they report different moments."""
    if max(a.last, b.last) - min(a.first, b.first) > timedelta(days=params.max_span_days):
        return None
    if max(a.first - b.last, b.first - a.last) > timedelta(days=params.window_days):
        return None
    if a.event and b.event and abs((a.event - b.event).days) > params.date_gap_days:
        return None
    return dot(a.centroid, b.centroid) / (max(1, a.count) * max(1, b.count))


def merge_plan(
    summaries: Sequence[Candidate], params: StoryParams, neighbours: Mapping[int, Iterable[int]] | None = None
) -> dict[int, tuple[int, float]]:
    """Which stories to merge into which: {absorbed story: (surviving story, link score)}, chains resolved.

    Average-link agglomeration: the pair of stories whose members are on average most similar is joined
    first (into the larger, then the older), the joined summary replaces both, and so on until no pair
    reaches ``merge_threshold``. Pure and deterministic (ties: the lowest ids). Only pairs named in
    ``neighbours`` (story -> stories it may join; a merged story inherits both lists) are compared, or
    every pair when it is None, which is quadratic."""
    groups = {
        s.story_id: _Group(
            s.story_id, dict(s.centroid), s.first_published_at, s.last_published_at, s.event_date, s.originals
        )
        for s in summaries
    }
    near = _neighbourhood(groups.keys(), neighbours)
    links: dict[tuple[int, int], float] = {}
    for first in sorted(groups):
        for second in sorted(near[first]):
            if first < second and (score := _link(groups[first], groups[second], params)) is not None:
                links[(first, second)] = score
    merged: dict[int, tuple[int, float]] = {}
    while links:
        (first, second), score = max(links.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        if score < params.merge_threshold:
            break
        a, b = groups[first], groups[second]
        keep, gone = (a, b) if (a.count, -a.story_id) >= (b.count, -b.story_id) else (b, a)
        keep.centroid = add_to_centroid(keep.centroid, gone.centroid, params)
        keep.first, keep.last = min(keep.first, gone.first), max(keep.last, gone.last)
        keep.event = keep.event or gone.event
        keep.count += gone.count
        merged[gone.story_id] = (keep.story_id, round(score, 4))
        del groups[gone.story_id]
        for other in near.pop(gone.story_id):
            near[other].discard(gone.story_id)
            links.pop((min(other, gone.story_id), max(other, gone.story_id)), None)
            if other != keep.story_id:
                near[other].add(keep.story_id)
                near[keep.story_id].add(other)
        for other in sorted(near[keep.story_id]):
            pair = (min(other, keep.story_id), max(other, keep.story_id))
            link = _link(keep, groups[other], params)
            if link is None:
                links.pop(pair, None)
            else:
                links[pair] = link
    for story_id in sorted(merged):
        target, score = merged[story_id]
        while target in merged:
            target = merged[target][0]
        merged[story_id] = (target, score)
    return merged


def _neighbourhood(stories: Iterable[int], neighbours: Mapping[int, Iterable[int]] | None) -> dict[int, set[int]]:
    """Who may be compared with whom, both ways, among these stories; everyone with everyone when None."""
    ids = set(stories)
    near: dict[int, set[int]] = {sid: set() for sid in ids}
    for sid, others in (neighbours or {sid: ids for sid in ids}).items():
        for other in others:
            if sid in ids and other in ids and other != sid:
                near[sid].add(other)
                near[other].add(sid)
    return near


@dataclass(frozen=True)
class Placed:
    """An original (not reprinted) article as placed, for ``refine_plan``."""

    article_id: int
    story_id: int
    published_at: datetime
    vector: Mapping[str, float]
    event_date: date | None = None
    url: str = ""  # breaks ties of publication time, which arrival order must not
    voice_id: int | None = None  # the member of its near-copy family whose text stands for it (None: itself)


def publication_order(article: Placed) -> tuple[object, ...]:
    """Publication order, ties broken by URL, never by arrival (an article id is its arrival)."""
    return (article.published_at, article.url, article.article_id)


class _Members:
    """A story as ``refine_plan`` sees it: its articles and the exact sum of their vectors."""

    def __init__(self) -> None:
        self.total: Counter[str] = Counter()
        self.articles: dict[int, Placed] = {}
        self._summary: tuple[datetime, datetime, date | None] | None = None
        self._square: float | None = None

    def add(self, article: Placed) -> None:
        self.total.update(article.vector)
        self.articles[article.article_id] = article
        self._summary = self._square = None

    def remove(self, article: Placed) -> None:
        self.total.subtract(article.vector)
        del self.articles[article.article_id]
        self._summary = self._square = None

    def norm(self) -> float:
        return math.sqrt(self.square())

    def square(self) -> float:
        """The squared norm of the sum, cached: every article of the neighbourhood is scored against this
        story in each sweep."""
        if self._square is None:
            self._square = sum(v * v for v in self.total.values())
        return self._square

    def score_without(self, article: Placed, square: float, params: StoryParams) -> float:
        """``_mixed_score`` of a member against the sum of the others, from the sum's cached squared norm
        (|s - v|² = |s|² - 2 s·v + |v|²): proportional to the member's terms, not to the story's."""
        along = dot(article.vector, self.total)
        rest = math.sqrt(max(0.0, self.square() - 2.0 * along + square))
        return _mixed(along - square, math.sqrt(square) * rest, len(self.articles) - 1, params)

    def summary(self) -> tuple[datetime, datetime, date | None]:
        """First and last publication, and the event date, as ``StoryState`` has them."""
        if self._summary is None:
            self._summary = _span_and_event(self.articles.values())
        return self._summary


def refine_plan(
    placed: Sequence[Placed], params: StoryParams, neighbours: Mapping[int, Iterable[int]] | None = None
) -> dict[int, tuple[int, float]]:
    """Which articles to move into which story: {article: (story, score)}.

    Placement is greedy and in arrival order: the first articles of an event can join a neighbouring
    event's story (same names, same days) and stay there once the event has a story of its own. Each
    article, in publication order, is scored as if it arrived now: against its own story without it,
    and against the stories neighbouring its own (the placement score on their exact member sums, with
    the same span and event-date rules). It moves to the best of them if that beats staying; an article
    alone in its story moves only where it would have been taken in (the joining threshold). Sweeps
    repeat, each seeing the moves before it, until none moves or ``refine_rounds`` is reached. Pure and
    deterministic (ties: stay, then the lower id). ``neighbours`` as in ``merge_plan``: None compares
    every pair of stories."""
    groups: dict[int, _Members] = {}
    for article in placed:
        groups.setdefault(article.story_id, _Members()).add(article)
    near = _neighbourhood(groups.keys(), neighbours)
    home = {a.article_id: a.story_id for a in placed}
    span = timedelta(days=params.max_span_days)
    scores: dict[int, float] = {}
    squares = {a.article_id: sum(v * v for v in a.vector.values()) for a in placed}  # used every sweep
    in_order = sorted(placed, key=publication_order)
    for _ in range(params.refine_rounds):
        changed = False
        for article in in_order:
            current = home[article.article_id]
            own = groups[current]
            square = squares[article.article_id]
            norm = math.sqrt(square)
            # Alone in its story, an article moves only where it would have been taken in.
            stay = own.score_without(article, square, params) if len(own.articles) > 1 else params.threshold
            best: tuple[float, int] | None = None
            for other in sorted(near[article.story_id] | near[current] | {article.story_id}):
                rival = groups[other]
                if other == current or not rival.articles:
                    continue
                first, last, event = rival.summary()
                if max(last, article.published_at) - min(first, article.published_at) > span:
                    continue
                score = _mixed_score(article.vector, rival.total, rival.norm(), len(rival.articles), params, norm)
                if article.event_date and event and abs((article.event_date - event).days) > params.date_gap_days:
                    score *= params.date_penalty  # as in best_story
                if score > stay and (best is None or score > best[0]):
                    best = (score, other)
            if best is not None:
                own.remove(article)
                groups[best[1]].add(article)
                home[article.article_id] = best[1]
                scores[article.article_id] = round(best[0], 4)
                changed = True
        if not changed:
            break
    return {
        a.article_id: (home[a.article_id], scores[a.article_id]) for a in placed if home[a.article_id] != a.story_id
    }
