"""Story-grouping quality on the labelled sets, through the normal import path, against the pinned floors.

    .venv/bin/python benchmarks/story_quality.py

Prints BCubed and pairwise P/R/F1 and story counts for rpm2-dev, for two edited copies of it, for the same
three as HTML pages, and for the five seeds (at their own dates, and all on one day, as text and as pages);
then rpm2-dev placed live in ten arrival orders. The product never sees the labels: they are read only to score.

The edited copies guard against tuning to the exact texts of rpm2-dev: the same articles as other outlets
run them, every one cut to its first three quarters (``rpm2-dev-cut``), or with its lead kept and a fifth
of its other paragraphs (sentences, for articles of few paragraphs) left out (``rpm2-dev-thinned``). A
change that raises rpm2-dev while these drop fits those texts, not the news.

The ``-pages`` sets score what users run: articles arrive as outlets' pages, not clean text. Each article
of rpm2-dev and of its two copies becomes a page in one of three outlet templates, with menu, breadcrumbs,
date line, "À lire aussi" links, comments and footer around it (benchmarks/pages.py), and the import
extracts it with trafilatura as the daemon does a fetched page. What the extraction keeps besides the
article, or loses of it, costs here.

``rpm2-dev-live-orders`` scores what the live service builds: rpm2-dev placed batch after batch through
``Ingestor.store_many`` in ten arrival orders with batches of 1 to 64 articles, grouped again when the
queue runs dry as a worker does (all drawn from a seeded ``random.Random``, so every run places the
same), each into a fresh database, with no merge pass. Its ``bcubed_f1`` is the worst order's and
``spread`` the best order's minus the worst's: grouping must not depend on which article came first.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.corpus import RPM2, seeds, text_units  # noqa: E402
from benchmarks.pages import pages_file  # noqa: E402
from monitor.errors import ImportLineError  # noqa: E402
from monitor.evaluation import Scores, evaluate, score  # noqa: E402
from monitor.fetch.urls import canonical_url  # noqa: E402
from monitor.grouping.params import StoryParams  # noqa: E402
from monitor.pipeline.importing import _incoming, read_lines, read_records  # noqa: E402
from monitor.pipeline.placement import Ingestor  # noqa: E402
from monitor.pipeline.prepare import Prepared, prepare  # noqa: E402
from monitor.storage import Article, Storage  # noqa: E402

FLOORS = json.loads((ROOT / "benchmarks" / "quality_floors.json").read_text(encoding="utf-8"))


def seeds_file(directory: Path, *, same_day: bool) -> Path:
    path = directory / ("seeds-same-day.jsonl" if same_day else "seeds.jsonl")
    lines = [
        json.dumps(
            {
                "url": f"https://outlet-{s.name}.example.fr/{s.name}",
                "title": s.title,
                "text": s.body,
                "published_at": f"{'2024-11-05' if same_day else s.published}T10:00:00+01:00",
                "source": f"outlet-{s.name}",
                "story": s.story,
            }
        )
        for s in seeds()
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


CUT = 0.75  # share of an article's units rpm2-dev-cut keeps, from the top
THINNED = 0.2  # share of the units after the lead rpm2-dev-thinned leaves out


def edited_rpm2(directory: Path, *, thinned: bool) -> Path:
    """rpm2-dev with every article edited as described above; labels and everything else unchanged."""
    path = directory / ("rpm2-dev-thinned.jsonl" if thinned else "rpm2-dev-cut.jsonl")
    lines = []
    for raw in RPM2.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        row = json.loads(raw)
        units = text_units(row["text"])
        if thinned:
            rest = range(1, len(units))
            left_out = set(random.Random(row["url"]).sample(rest, round(THINNED * len(rest))))
            units = [unit for i, unit in enumerate(units) if i not in left_out]
        else:
            units = units[: max(3, round(CUT * len(units)))]
        lines.append(json.dumps({**row, "text": "\n".join(units)}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


LIVE_ORDERS = 10  # arrival orders rpm2-dev-live-orders places rpm2-dev in; each costs about 4 s of CPU
LIVE_BATCH = (1, 64)  # smallest and largest batch drawn; 64 is placement.BATCH, the most a transaction takes
SETTLE_CHANCE = 0.25  # share of batches after which the queue runs dry and the worker groups again


@dataclass(frozen=True)
class OrderScores:
    """One labelled file placed live in several arrival orders: the worst order and how far apart they land."""

    bcubed_f1: float  # the lowest over the orders
    pairwise_f1: float  # the lowest over the orders
    spread: float  # bcubed_f1: the highest over the orders minus the lowest
    orders: tuple[Scores, ...]  # by seed

    def as_dict(self) -> dict[str, object]:
        return {
            "bcubed_f1": self.bcubed_f1,
            "pairwise_f1": self.pairwise_f1,
            "spread": self.spread,
            "orders_bcubed_f1": [s.bcubed_f1 for s in self.orders],
        }


def live_order(path: Path, seed: int) -> Scores:
    """``path`` shuffled and cut into batches of LIVE_BATCH sizes, both drawn from ``random.Random(seed)``,
    each batch stored by the import's own code (prepared once per process, ``_prepared``) into a fresh
    SQLite database and grouped again as a worker does (``Ingestor.settle``: when its queue runs dry, here
    after a random SETTLE_CHANCE of batches, and once the last is in), with no merge pass after: what the
    live service holds once the burst is in."""
    prepared = _prepared(path)
    lines = list(prepared)
    gold: dict[str, object] = {}
    for _, record in read_records(path):
        if not isinstance(record, ImportLineError):
            url = canonical_url(str(record["url"]))  # the database holds canonical URLs, as evaluate() says
            if isinstance(url, str):
                gold[url] = record["story"]
    rng = random.Random(seed)
    rng.shuffle(lines)
    with tempfile.TemporaryDirectory() as tmp, Storage(f"sqlite:///{tmp}/orders.db") as storage:
        storage.upgrade()
        ingestor = Ingestor(storage)
        start = 0
        while start < len(lines):
            size = rng.randint(*LIVE_BATCH)
            ingestor.store_many([prepared[line] for line in lines[start : start + size]], regroup=False)
            start += size
            if rng.random() < SETTLE_CHANCE:  # the queue ran dry: the worker groups again what it placed
                ingestor.settle()
        ingestor.settle()  # the burst is in
        with storage.repository() as repo:
            predicted = dict(repo.session.execute(select(Article.url, Article.story_id)).all())
    return score(predicted, {url: label for url, label in gold.items() if url in predicted})


@lru_cache(maxsize=1)
def _prepared(path: Path) -> dict[str, Prepared]:
    """Each line of ``path`` prepared once per process, by its URL: every order places the same articles,
    and a prepared article carries nothing of the order (fetched_at, the one field set at import, is only
    stored)."""
    now = datetime.now(UTC)
    return {
        line.url: prepare(_incoming(line, now), StoryParams())
        for _, line in read_lines(path)
        if not isinstance(line, ImportLineError)
    }


def order_scores(orders: Sequence[Scores]) -> OrderScores:
    b3 = [s.bcubed_f1 for s in orders]
    return OrderScores(min(b3), min(s.pairwise_f1 for s in orders), round(max(b3) - min(b3), 4), tuple(orders))


def live_orders(path: Path = RPM2, orders: int = LIVE_ORDERS) -> OrderScores:
    return order_scores([live_order(path, seed) for seed in range(orders)])


def all_scores(workers: int | None = None) -> dict[str, Scores | OrderScores]:
    """Every set scored; the imports and the orders, each a few seconds of CPU on its own database, run in
    ``workers`` processes (one per CPU unless given; 1: all in this one)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        cut = edited_rpm2(directory, thinned=False)
        thinned = edited_rpm2(directory, thinned=True)
        same_day = seeds_file(directory, same_day=True)
        files = {
            "rpm2-dev": RPM2,
            "rpm2-dev-cut": cut,
            "rpm2-dev-thinned": thinned,
            "rpm2-dev-pages": pages_file(RPM2, directory),
            "rpm2-dev-cut-pages": pages_file(cut, directory),
            "rpm2-dev-thinned-pages": pages_file(thinned, directory),
            "seeds": seeds_file(directory, same_day=False),
            "seeds-same-day": same_day,
            "seeds-same-day-pages": pages_file(same_day, directory),
        }
        workers = min(workers or os.cpu_count() or 1, len(files) + LIVE_ORDERS)
        if workers == 1:
            scored = {name: evaluate(path) for name, path in files.items()}
            orders = [live_order(RPM2, seed) for seed in range(LIVE_ORDERS)]
        else:
            # spawn, not fork: a child forked from a process holding database connections would share them
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                order_jobs = [pool.submit(live_order, RPM2, seed) for seed in range(LIVE_ORDERS)]
                file_jobs = {name: pool.submit(evaluate, path) for name, path in files.items()}
                scored = {name: job.result() for name, job in file_jobs.items()}
                orders = [job.result() for job in order_jobs]
    return {**scored, "rpm2-dev-live-orders": order_scores(orders)}


def below_floors(scores: dict[str, Scores | OrderScores]) -> list[str]:
    """Every bound of quality_floors.json that a score breaks: a key names a metric that must reach it (a
    floor), or, as ``max_<metric>``, one that must not exceed it (a ceiling, such as ``max_spread``)."""
    failures = []
    for name, bounds in FLOORS.items():
        if name.startswith("_"):
            continue
        if name not in scores:
            failures.append(f"{name} not scored")
            continue
        for key, bound in bounds.items():
            if key.startswith("max_"):
                metric = key.removeprefix("max_")
                value = getattr(scores[name], metric)
                if value > bound:
                    failures.append(f"{name} {metric} {value} > ceiling {bound}")
            elif (value := getattr(scores[name], key)) < bound:
                failures.append(f"{name} {key} {value} < floor {bound}")
    return failures


def main() -> None:
    scores = all_scores()
    print(f"{'set':23} {'B3 P':>6} {'B3 R':>6} {'B3 F1':>6} {'pair F1':>7} {'stories':>8} {'gold':>5}")
    for name, s in scores.items():
        if isinstance(s, Scores):
            print(
                f"{name:23} {s.bcubed_precision:6.3f} {s.bcubed_recall:6.3f} {s.bcubed_f1:6.3f} "
                f"{s.pairwise_f1:7.3f} {s.predicted_stories:8d} {s.gold_stories:5d}"
            )
    for name, s in scores.items():
        if isinstance(s, OrderScores):
            low, high = LIVE_BATCH
            print(f"\n{name}: {len(s.orders)} arrival orders, batches of {low} to {high}, no merge pass")
            print(f"{'order':23} {'B3 P':>6} {'B3 R':>6} {'B3 F1':>6} {'pair F1':>7} {'stories':>8} {'gold':>5}")
            for seed, o in enumerate(s.orders):
                print(
                    f"{seed:<23d} {o.bcubed_precision:6.3f} {o.bcubed_recall:6.3f} {o.bcubed_f1:6.3f} "
                    f"{o.pairwise_f1:7.3f} {o.predicted_stories:8d} {o.gold_stories:5d}"
                )
            print(f"lowest B3 F1 {s.bcubed_f1:.4f}, lowest pair F1 {s.pairwise_f1:.4f}, B3 F1 spread {s.spread:.4f}")
    failures = below_floors(scores)
    print("\n" + ("\n".join(failures) if failures else "all floors held"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
