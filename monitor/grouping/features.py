"""What an article is to grouping: a sparse TF-IDF vector of stemmed French terms (title and lead
weighted, stop words out), its event date, and the week buckets a story is indexed under."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from functools import lru_cache

from monitor.grouping.params import StoryParams
from monitor.text import fold, mentioned_dates, stemmer, stop_words, tokens

MAX_TERM_CHARS = 40  # longer "words" are hashes, base64 or run-together text, not vocabulary


_CALENDAR = (
    "lundi mardi mercredi jeudi vendredi samedi dimanche hier aujourd hui demain janvier février mars avril "
    "mai juin juillet août septembre octobre novembre décembre"
)


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    extra = "a à c d j l m n s t qu jusqu lorsqu puisqu quoiqu été être fait faire dont selon déjà également depuis"
    return stop_words() | frozenset((extra + " " + _CALENDAR).split())


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
    return fold(stemmer().stemWord(word))  # folded after stemming: the stemmer knows accents


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
    """Over the shared terms only, found in C: most terms of two articles differ, and this runs millions
    of times per regrouping. ``fsum`` is exact, so the set's order (string hashing differs from process
    to process) cannot change a score: workers agree to the last bit."""
    return math.fsum([a[t] * b[t] for t in a.keys() & b.keys()])


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
