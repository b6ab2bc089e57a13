"""The CI quality gate: story grouping on the labelled sets must not drop below the pinned floors."""

from __future__ import annotations

from benchmarks.story_quality import all_scores, below_floors


def test_story_grouping_holds_its_floors() -> None:
    scores = all_scores()
    assert below_floors(scores) == [], {name: s.as_dict() for name, s in scores.items()}
    assert scores["seeds"].predicted_stories == 2 and scores["seeds"].bcubed_f1 == 1.0
    assert scores["rpm2-dev"].articles == scores["rpm2-dev-cut"].articles == scores["rpm2-dev-thinned"].articles == 200
