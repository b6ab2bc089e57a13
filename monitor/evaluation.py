"""Scoring story grouping against gold labels: BCubed and pairwise precision/recall/F1.

The labelled file is imported through the normal ingestion code into a throwaway database;
labels are read here only, after the fact, and never reach the product.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from monitor.errors import ConfigError, ImportLineError
from monitor.fetch.urls import canonical_url
from monitor.grouping.params import StoryParams
from monitor.limits import MAX_IMPORT_LINE_BYTES
from monitor.pipeline.importing import import_file, read_records
from monitor.pipeline.placement import Ingestor
from monitor.storage import Article, Storage


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
    path: Path,
    *,
    label: str = "story",
    params: StoryParams | None = None,
    database_url: str | None = None,
    max_line_bytes: int = MAX_IMPORT_LINE_BYTES,
) -> Scores:
    """Import ``path`` into a fresh database (SQLite in a temp dir unless given) and score it.

    Scores over a partly imported file would mislead, so any unusable line stops it, with its number."""
    labelled: list[tuple[str, str | int]] = []  # (url, gold label)
    for number, record in read_records(path, max_line_bytes):
        if isinstance(record, ImportLineError):
            continue  # the import below names it
        gold_label = record.get(label)
        if not isinstance(gold_label, str | int) or isinstance(gold_label, bool):
            raise ConfigError(f"{path}:line {number}: no {label!r} label (a string or number; see --label)")
        labelled.append((str(record.get("url")), gold_label))
    if not labelled:
        raise ConfigError(f"{path}: no labelled articles to score")
    with tempfile.TemporaryDirectory() as tmp, Storage(database_url or f"sqlite:///{tmp}/eval.db") as storage:
        storage.upgrade()
        report = import_file(path, Ingestor(storage, params), max_line_bytes=max_line_bytes)
        if report.errors:
            more = f" (and {report.skipped - 1} more)" if report.skipped > 1 else ""
            raise ConfigError(f"{path}:{report.errors[0]}{more}")
        with storage.repository() as repo:
            predicted = dict(repo.session.execute(select(Article.url, Article.story_id)).all())
    # An HTML page naming another canonical URL is stored under that one: it cannot be matched, so not scored.
    matched: dict[str, object] = {}
    for url, gold_label in labelled:
        canonical = canonical_url(url)
        if isinstance(canonical, str) and canonical in predicted:
            matched[canonical] = gold_label
    if not matched:
        raise ConfigError(f"{path}: no article was stored under its own URL, so none can be scored")
    return score(predicted, matched)
