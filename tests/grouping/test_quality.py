"""The CI quality gate: story grouping on the labelled sets must not drop below the pinned floors, whether the
articles come as text or as outlets' pages, and whatever order they arrive in."""

from __future__ import annotations

import pytest

from benchmarks.story_quality import FLOORS, LIVE_ORDERS, OrderScores, all_scores, below_floors
from monitor.evaluation import Scores


@pytest.mark.slow
def test_story_grouping_holds_its_floors() -> None:
    scores = all_scores(workers=1)  # in this test process: the other test processes keep the cores busy
    assert below_floors(scores) == [], {name: s.as_dict() for name, s in scores.items()}
    assert set(scores) == {name for name in FLOORS if not name.startswith("_")}  # every set scored has floors
    assert isinstance(seeds := scores["seeds"], Scores) and seeds.predicted_stories == 2 and seeds.bcubed_f1 == 1.0
    for name in ("rpm2-dev", "rpm2-dev-cut", "rpm2-dev-thinned"):
        for variant in (name, f"{name}-pages"):  # every page extracted, and stored under its own URL
            assert isinstance(s := scores[variant], Scores) and s.articles == 200, variant
    orders = scores["rpm2-dev-live-orders"]
    assert isinstance(orders, OrderScores) and len(orders.orders) == LIVE_ORDERS
    assert all(order.articles == 200 for order in orders.orders)


def test_a_spread_is_a_ceiling_and_a_score_a_floor() -> None:
    text = Scores(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 200, 20, 20)
    scores: dict[str, Scores | OrderScores] = {name: text for name in FLOORS if not name.startswith("_")}
    wide = OrderScores(0.99, 0.99, 0.05, (text,))
    narrow_but_low = OrderScores(0.5, 0.5, 0.0, (text,))
    assert below_floors({**scores, "rpm2-dev-live-orders": OrderScores(0.99, 0.99, 0.0, (text,))}) == []
    assert below_floors({**scores, "rpm2-dev-live-orders": wide}) == ["rpm2-dev-live-orders spread 0.05 > ceiling 0.01"]
    assert below_floors({**scores, "rpm2-dev-live-orders": narrow_but_low}) == [
        "rpm2-dev-live-orders bcubed_f1 0.5 < floor 0.955"
    ]
    del scores["seeds"]
    assert "seeds not scored" in below_floors({**scores, "rpm2-dev-live-orders": wide})
