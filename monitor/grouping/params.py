"""Every threshold of story grouping in one place, so that a setting or a benchmark changes them together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoryParams:
    """Every threshold and weight of story grouping, in one place (MONITOR_STORY_* overrides)."""

    threshold: float = 0.14  # score (article, story) needed to join a story: see _article_score
    window_days: float = 7.0  # a story takes articles while its latest one is this recent
    max_span_days: float = 14.0  # and never spans more than this: a later follow-up is a new story
    title_weight: float = 2.0  # one occurrence in the title counts this much
    lead_weight: float = 2.0  # one occurrence among the first lead_words of the body
    lead_words: int = 60
    entity_weight: float = 1.5  # multiplier for capitalised words not at a sentence start (names)
    vector_terms: int = 100  # terms kept per article vector
    centroid_terms: int = 200  # terms kept per story centroid
    date_lead_chars: int = 300  # dates written this early in an article say when its event happened
    date_gap_days: int = 90  # an article whose event date is further than this from the story's...
    date_penalty: float = 0.5  # ...has its score multiplied by this
    index_terms: int = 30  # a story is findable by its centroid's top terms (the story_terms index)...
    query_terms: int = 30  # ...through an article's top terms...
    candidates: int = 50  # ...and the stories sharing the most weight with it are scored in full
    member_weight: float = 0.5  # share of the average member similarity in the score (the rest: centroid cosine)
    merge_threshold: float = 0.06  # average similarity between two stories' members for the merge pass to join them
    refine_rounds: int = 5  # after merging, sweeps moving each article to the story it now fits best (0: none)
