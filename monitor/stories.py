"""Tier 2: grouping coverage of one announcement into a story, online, one article at a time.

An article is a sparse TF-IDF vector of stemmed French terms (title and lead weighted, stop words
out), with document frequencies kept in the database and updated as articles arrive. A story is
the running sum of its members' vectors. The article joins the best-scoring story active around
its publication time if the score clears the threshold, else founds a new story. The score mixes the
cosine with the story centroid and the article's average similarity to the story's members (the
centroid over the member count, exact for unit vectors): the cosine alone favours loose stories.
Stories are bounded in time: a follow-up weeks later is a new story.

Placement is greedy, so a story's coverage can start in several pieces. ``merge_plan`` is the periodic
pass that joins them: average-link agglomeration over young stories and their neighbours. Greedy placement
can also pull the first articles of one event into a neighbouring event's story; ``refine_plan``, run after
each merge, moves every article of those stories to the one it now scores best in.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Protocol

import Stemmer
from stop_words import get_stop_words

from monitor.text import mentioned_dates, normalize, tokens


@dataclass(frozen=True)
class StoryParams:
    """Every threshold and weight of story grouping, in one place (MONITOR_STORY_* overrides)."""

    threshold: float = 0.14  # score (article, story) needed to join a story: see _article_score
    window_days: float = 7.0  # a story takes articles while its latest one is this recent
    max_span_days: float = 14.0  # and never spans more than this: a later follow-up is a new story
    title_weight: float = 3.0  # one occurrence in the title counts this much
    lead_weight: float = 2.0  # one occurrence among the first lead_words of the body
    lead_words: int = 60
    entity_weight: float = 1.5  # multiplier for capitalised words not at a sentence start (names)
    vector_terms: int = 100  # terms kept per article vector
    centroid_terms: int = 200  # terms kept per story centroid
    time_decay_days: float = 0.0  # when > 0, score *= exp(-gap in days / this)
    date_lead_chars: int = 300  # dates written this early in an article say when its event happened
    date_gap_days: int = 60  # an article whose event date is further than this from the story's...
    date_penalty: float = 0.5  # ...has its score multiplied by this
    index_terms: int = 30  # a story is findable by its centroid's top terms (the story_terms index)...
    query_terms: int = 30  # ...through an article's top terms...
    candidates: int = 50  # ...and the stories sharing the most weight with it are scored in full
    member_weight: float = 0.5  # share of the average member similarity in the score (the rest: centroid cosine)
    merge_threshold: float = 0.06  # average similarity between two stories' members for the merge pass to join them
    refine_rounds: int = 5  # after merging, sweeps moving each article to the story it now fits best (0: none)


MAX_TERM_CHARS = 40  # longer "words" are hashes, base64 or run-together text, not vocabulary


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("french")


_CALENDAR = (
    "lundi mardi mercredi jeudi vendredi samedi dimanche hier aujourd hui demain janvier février mars avril "
    "mai juin juillet août septembre octobre novembre décembre"
)


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    extra = "a à c d j l m n s t qu jusqu lorsqu puisqu quoiqu été être fait faire dont selon déjà également depuis"
    return frozenset(normalize(w) for w in get_stop_words("french")) | frozenset((extra + " " + _CALENDAR).split())


def _fold(stem: str) -> str:
    """Diacritics off after stemming, so 'Etat' and 'État' meet."""
    return "".join(c for c in unicodedata.normalize("NFD", stem) if not unicodedata.combining(c))


def term_counts(title: str, text: str, params: StoryParams) -> Counter[str]:
    """Weighted counts of stemmed content terms: title, lead and names count more than the body."""
    counts: Counter[str] = Counter()
    body = tokens(text)
    zones = ((params.title_weight, tokens(title)), (params.lead_weight, body[: params.lead_words]), (1.0, body))
    for weight, zone in zones:
        for word, name in zone:
            term = _term(word)
            if term is not None:
                counts[term] += weight * (params.entity_weight if name else 1.0)  # type: ignore[assignment]
    return counts


@lru_cache(maxsize=1 << 16)
def _term(word: str) -> str | None:
    """The index term of a word, or None for a stop word, a number or junk. Cached: a language's running
    text reuses a small vocabulary, and stemming and folding were a tenth of a worker's time."""
    if word in _stop_words() or not 2 <= len(word) <= MAX_TERM_CHARS or word.isdigit():
        return None
    return _fold(_stemmer().stemWord(word))


def vectorize(counts: Mapping[str, float], df: Mapping[str, int], n_docs: int, params: StoryParams) -> dict[str, float]:
    """Unit-length TF-IDF vector of the top terms; the article counts as one of the documents."""
    weights = {
        term: (1.0 + math.log(tf)) * (math.log((n_docs + 2) / (df.get(term, 0) + 2)) + 1.0)
        for term, tf in counts.items()
        if tf > 0
    }
    top = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[: params.vector_terms]
    return _unit(dict(top))


def _unit(vector: Mapping[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
    return {t: round(v / norm, 6) for t, v in vector.items()}


def dot(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(t, 0.0) for t, v in a.items())


def _norm(vector: Mapping[str, float]) -> float:
    return math.sqrt(sum(v * v for v in vector.values()))


def add_to_centroid(
    centroid: Mapping[str, float], vector: Mapping[str, float], params: StoryParams
) -> dict[str, float]:
    total = Counter(centroid)
    total.update(vector)
    top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[: params.centroid_terms]
    return {t: round(v, 6) for t, v in top}


def event_date(title: str, text: str, published_at: datetime, params: StoryParams) -> date | None:
    """The median of the dates written at the top of the article, if any; of two middle ones, the later: a
    lead citing two dates usually gives the news and the background it follows (a hostage freed in July,
    the talks of September), and the earlier one would set the article months before its story."""
    found = sorted(mentioned_dates(f"{title}\n{text}"[: params.date_lead_chars], published_at.date()))
    return found[len(found) // 2] if found else None


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
    """First and last publication of a story's articles, and its event date: the lower median of theirs."""
    listed = list(articles)
    moments = [a.published_at for a in listed]
    dates = sorted(a.event_date for a in listed if a.event_date is not None)
    return min(moments), max(moments), dates[(len(dates) - 1) // 2] if dates else None


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
        """First and last publication, event date (the lower median of the members'), originals. Cached
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


def query_terms(vector: Mapping[str, float], params: StoryParams) -> list[str]:
    return [t for t, _ in sorted(vector.items(), key=lambda kv: (-kv[1], kv[0]))[: params.query_terms]]


def week_of(moment: datetime) -> int:
    return int(moment.timestamp() // (7 * 86400))


def candidate_weeks(first: datetime, last: datetime, params: StoryParams) -> list[int]:
    """The weeks in which a story that may take an article (or a story) published from ``first`` to ``last``
    can have started. The story_terms index is partitioned by a story's first week, so finding candidates
    costs the same in a corpus of a thousand articles or of a million."""
    start = first - timedelta(days=params.max_span_days)
    end = last + timedelta(days=params.window_days)
    return list(range(week_of(start), week_of(end) + 1))


@dataclass(frozen=True)
class Match:
    story_id: int
    score: float


def _article_score(vector: Mapping[str, float], candidate: Candidate, params: StoryParams) -> float:
    return _mixed_score(vector, candidate.centroid, _norm(candidate.centroid), candidate.originals, params)


def _mixed_score(
    vector: Mapping[str, float],
    total: Mapping[str, float],
    total_norm: float,
    count: int,
    params: StoryParams,
    vector_norm: float | None = None,
) -> float:
    """Cosine with the members' sum mixed with the average similarity to the members (vector · sum / count)."""
    norm = _norm(vector) if vector_norm is None else vector_norm
    return _mixed(dot(vector, total), norm * total_norm, count, params)


def _mixed(shared: float, norm: float, count: int, params: StoryParams) -> float:
    cos = shared / norm if norm else 0.0
    if count <= 0:
        return cos
    return (1.0 - params.member_weight) * cos + params.member_weight * shared / count


def best_story(
    vector: Mapping[str, float],
    published_at: datetime,
    candidates: Sequence[Candidate],
    params: StoryParams,
    event: date | None = None,
) -> Match | None:
    """The best-scoring candidate that clears the threshold (ties: the older story), or None."""
    best: Match | None = None
    span = timedelta(days=params.max_span_days)
    for candidate in candidates:
        if published_at - candidate.first_published_at > span or candidate.last_published_at - published_at > span:
            continue
        gap = max(timedelta(0), published_at - candidate.last_published_at, candidate.first_published_at - published_at)
        score = _article_score(vector, candidate, params)
        if params.time_decay_days > 0:
            score *= math.exp(-gap.total_seconds() / 86400 / params.time_decay_days)
        if event and candidate.event_date and abs((event - candidate.event_date).days) > params.date_gap_days:
            score *= params.date_penalty  # same names, another moment: likely another event
        if score >= params.threshold and (best is None or score > best.score):
            best = Match(candidate.story_id, round(score, 4))
    return best


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
    in_order = sorted(placed, key=lambda a: (a.published_at, a.article_id))
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
