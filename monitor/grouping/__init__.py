"""Grouping: near-copies and stories, pure computation with no database.

Tier 1, ``nearcopy``: MinHash LSH over word shingles flags reprints of one text. Tier 2, stories: an
article is a TF-IDF vector (``features``); a story is the running sum of its members (``state``); an
article joins the best-scoring story around its publication (``scoring``) or founds one; young stories
that turn out to be one are merged, and their articles refined (``merging``). Every threshold is in
``params``. The design and its evidence: docs/grouping.md.
"""

from monitor.grouping.features import (
    add_to_centroid,
    candidate_weeks,
    dot,
    event_date,
    query_terms,
    term_counts,
    vectorize,
    week_of,
)
from monitor.grouping.merging import Placed, merge_plan, refine_plan
from monitor.grouping.params import StoryParams
from monitor.grouping.regrouping import Change, parts, regroup
from monitor.grouping.scoring import Match, best_story
from monitor.grouping.state import Candidate, Member, StoryState

__all__ = [
    "Candidate",
    "Change",
    "Match",
    "Member",
    "Placed",
    "StoryParams",
    "StoryState",
    "add_to_centroid",
    "best_story",
    "candidate_weeks",
    "dot",
    "event_date",
    "merge_plan",
    "parts",
    "query_terms",
    "refine_plan",
    "regroup",
    "term_counts",
    "vectorize",
    "week_of",
]
