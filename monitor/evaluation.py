"""Scoring story grouping against gold labels: BCubed and pairwise precision/recall/F1.

The labelled file is imported through the normal ingestion code into a throwaway database;
labels are read here only, after the fact, and never reach the product.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from monitor.importing import import_file
from monitor.ingest import Ingestor
from monitor.storage import Article, Storage
from monitor.stories import StoryParams
from monitor.urls import canonical_url


@dataclass(frozen=True)
class Scores:
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    articles: int
    predicted_stories: int
    gold_stories: int

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def score(predicted: Mapping[str, object], gold: Mapping[str, object]) -> Scores:
    """Both map item → cluster label, over the same items."""
    items = sorted(gold)
    pred_sizes = Counter(predicted[i] for i in items)
    gold_sizes = Counter(gold[i] for i in items)
    joint = Counter((predicted[i], gold[i]) for i in items)
    precision = sum(joint[(predicted[i], gold[i])] / pred_sizes[predicted[i]] for i in items) / len(items)
    recall = sum(joint[(predicted[i], gold[i])] / gold_sizes[gold[i]] for i in items) / len(items)
    pairs_both = sum(n * (n - 1) / 2 for n in joint.values())
    pairs_pred = sum(n * (n - 1) / 2 for n in pred_sizes.values())
    pairs_gold = sum(n * (n - 1) / 2 for n in gold_sizes.values())
    pp = pairs_both / pairs_pred if pairs_pred else 1.0
    pr = pairs_both / pairs_gold if pairs_gold else 1.0
    return Scores(
        round(precision, 4),
        round(recall, 4),
        round(_f1(precision, recall), 4),
        round(pp, 4),
        round(pr, 4),
        round(_f1(pp, pr), 4),
        len(items),
        len(pred_sizes),
        len(gold_sizes),
    )


def evaluate(
    path: Path, *, label: str = "story", params: StoryParams | None = None, database_url: str | None = None
) -> Scores:
    """Import ``path`` into a fresh database (SQLite in a temp dir unless given) and score it."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(database_url or f"sqlite:///{tmp}/eval.db")
        storage.upgrade()
        report = import_file(path, Ingestor(storage, params))
        if report.errors:
            raise ValueError(f"{path}: {len(report.errors)} lines failed, first: {report.errors[0]}")
        gold = {}
        with path.open(encoding="utf-8") as handle:
            for raw in handle:
                if raw.strip():
                    row = json.loads(raw)
                    gold[canonical_url(row["url"])] = row[label]
        with storage.repository() as repo:
            predicted = dict(repo.session.execute(select(Article.url, Article.story_id)).all())
        storage.engine.dispose()
    return score(predicted, gold)
