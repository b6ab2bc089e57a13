"""Tier 2: grouping coverage of one announcement into a story, online, one article at a time.

An article is a sparse TF-IDF vector of stemmed French terms (title and lead weighted, stop words
out), with document frequencies kept in the database and updated as articles arrive. A story is
the running sum of its members' vectors. The article joins the most similar story active around
its publication time if the cosine similarity clears the threshold, else founds a new story.
Stories are bounded in time: a follow-up weeks later is a new story.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

import Stemmer
from stop_words import get_stop_words

from monitor.text import mentioned_dates, normalize, tokens


@dataclass(frozen=True)
class StoryParams:
    """Every threshold and weight of story grouping, in one place (MONITOR_STORY_* overrides)."""

    threshold: float = 0.14  # cosine(article, story centroid) needed to join a story
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
    stop, stem = _stop_words(), _stemmer().stemWord
    counts: Counter[str] = Counter()
    body = tokens(text)
    zones = ((params.title_weight, tokens(title)), (params.lead_weight, body[: params.lead_words]), (1.0, body))
    for weight, zone in zones:
        for token in zone:
            word = token.word
            if word in stop or len(word) < 2 or word.isdigit():
                continue
            counts[_fold(stem(word))] += weight * (params.entity_weight if token.name else 1.0)  # type: ignore[assignment]
    return counts


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


def cosine(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    dot = sum(v * b.get(t, 0.0) for t, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


def add_to_centroid(
    centroid: Mapping[str, float], vector: Mapping[str, float], params: StoryParams
) -> dict[str, float]:
    total = Counter(centroid)
    total.update(vector)
    top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[: params.centroid_terms]
    return {t: round(v, 6) for t, v in top}


def event_date(title: str, text: str, published_at: datetime, params: StoryParams) -> date | None:
    """The median of the dates written at the top of the article, if any."""
    found = sorted(mentioned_dates(f"{title}\n{text}"[: params.date_lead_chars], published_at.date()))
    return found[(len(found) - 1) // 2] if found else None


@dataclass(frozen=True)
class Candidate:
    story_id: int
    centroid: Mapping[str, float]
    first_published_at: datetime
    last_published_at: datetime
    event_date: date | None = None


@dataclass(frozen=True)
class Member:
    """What a story needs to know of one of its articles to summarise itself."""

    article_id: int
    published_at: datetime
    source: str
    title: str
    event_date: date | None
    duplicate: bool


@dataclass
class StoryState:
    """A story's running summary, kept while a batch of articles is placed and then written back."""

    story_id: int
    title: str
    centroid: dict[str, float]
    members: list[Member]

    def add(self, member: Member, vector: Mapping[str, float] | None, params: StoryParams) -> None:
        """Take an article in; a reprint (vector None) adds no evidence, so the centroid stays."""
        self.members.append(member)
        if vector is not None:
            self.centroid = add_to_centroid(self.centroid, vector, params)

    @property
    def first_published_at(self) -> datetime:
        return min(m.published_at for m in self.members)

    @property
    def last_published_at(self) -> datetime:
        return max(m.published_at for m in self.members)

    @property
    def outlet_count(self) -> int:
        return len({m.source for m in self.members})

    @property
    def event_date(self) -> date | None:
        dates = sorted(m.event_date for m in self.members if m.event_date is not None)
        return dates[(len(dates) - 1) // 2] if dates else None

    @property
    def headline(self) -> str:
        """The title of its earliest original article: how the story broke."""
        originals = sorted((m.published_at, m.article_id, m.title) for m in self.members if not m.duplicate)
        return originals[0][2] if originals else self.title

    def candidate(self) -> Candidate:
        return Candidate(self.story_id, self.centroid, self.first_published_at, self.last_published_at, self.event_date)

    def index_terms(self, params: StoryParams) -> list[tuple[str, float]]:
        """The centroid's heaviest terms: what finds this story from a new article."""
        return sorted(self.centroid.items(), key=lambda kv: (-kv[1], kv[0]))[: params.index_terms]


def query_terms(vector: Mapping[str, float], params: StoryParams) -> list[str]:
    return [t for t, _ in sorted(vector.items(), key=lambda kv: (-kv[1], kv[0]))[: params.query_terms]]


def time_buckets(start: datetime, end: datetime) -> list[int]:
    """Week numbers covering [start, end]: the story_terms index is partitioned by a story's first week,
    so finding candidates costs the same in a corpus of a thousand articles or of a million."""
    return list(range(week_of(start), week_of(end) + 1))


def week_of(moment: datetime) -> int:
    return int(moment.timestamp() // (7 * 86400))


def founding_range(published_at: datetime, params: StoryParams) -> tuple[datetime, datetime]:
    """When a story that may take this article can have started."""
    return published_at - timedelta(days=params.max_span_days), published_at + timedelta(days=params.window_days)


@dataclass(frozen=True)
class Match:
    story_id: int
    score: float


def window(published_at: datetime, params: StoryParams) -> tuple[datetime, datetime]:
    """The time range of stories that may take an article published at ``published_at``."""
    return published_at - timedelta(days=params.window_days), published_at + timedelta(days=params.window_days)


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
        score = cosine(vector, candidate.centroid)
        if params.time_decay_days > 0:
            score *= math.exp(-gap.total_seconds() / 86400 / params.time_decay_days)
        if event and candidate.event_date and abs((event - candidate.event_date).days) > params.date_gap_days:
            score *= params.date_penalty  # same names, another moment: likely another event
        if score >= params.threshold and (best is None or score > best.score):
            best = Match(candidate.story_id, round(score, 4))
    return best
