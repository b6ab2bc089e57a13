"""Story-grouping quality on the labelled sets, through the normal import path, against the pinned floors.

    .venv/bin/python benchmarks/story_quality.py

Prints BCubed and pairwise P/R/F1 and story counts for rpm2-dev and for the five seeds (at their own
dates, and all on one day). The product never sees the labels: they are read only to score.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.evaluation import Scores, evaluate  # noqa: E402
from tests.support import RPM2, seeds  # noqa: E402

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


def all_scores() -> dict[str, Scores]:
    with tempfile.TemporaryDirectory() as tmp:
        return {
            "rpm2-dev": evaluate(RPM2),
            "seeds": evaluate(seeds_file(Path(tmp), same_day=False)),
            "seeds-same-day": evaluate(seeds_file(Path(tmp), same_day=True)),
        }


def below_floors(scores: dict[str, Scores]) -> list[str]:
    return [
        f"{name} {metric} {getattr(scores[name], metric)} < floor {floor}"
        for name, floors in FLOORS.items()
        if not name.startswith("_")
        for metric, floor in floors.items()
        if getattr(scores[name], metric) < floor
    ]


def main() -> None:
    scores = all_scores()
    print(f"{'set':16} {'B3 P':>6} {'B3 R':>6} {'B3 F1':>6} {'pair F1':>7} {'stories':>8} {'gold':>5}")
    for name, s in scores.items():
        print(
            f"{name:16} {s.bcubed_precision:6.3f} {s.bcubed_recall:6.3f} {s.bcubed_f1:6.3f} {s.pairwise_f1:7.3f} "
            f"{s.predicted_stories:8d} {s.gold_stories:5d}"
        )
    failures = below_floors(scores)
    print("\n".join(failures) if failures else "all floors held")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
