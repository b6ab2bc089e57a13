"""The story score: the cosine with the story centroid mixed with the article's average similarity to
the story's members (the cosine alone favours loose stories), within the story's time bounds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from monitor.grouping.features import _norm, dot
from monitor.grouping.params import StoryParams
from monitor.grouping.state import Candidate


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
        score = _article_score(vector, candidate, params)
        if event and candidate.event_date and abs((event - candidate.event_date).days) > params.date_gap_days:
            score *= params.date_penalty  # same names, another moment: likely another event
        if score >= params.threshold and (best is None or score > best.score):
            best = Match(candidate.story_id, round(score, 4))
    return best
