"""Story-grouping quality on the labelled sets, through the normal import path, against the pinned floors.

    .venv/bin/python benchmarks/story_quality.py

Prints BCubed and pairwise P/R/F1 and story counts for rpm2-dev, for two edited copies of it, and for the
five seeds (at their own dates, and all on one day). The product never sees the labels: they are read only
to score.

The edited copies guard against tuning to the exact texts of rpm2-dev: the same articles as other outlets
run them, every one cut to its first three quarters (``rpm2-dev-cut``), or with its lead kept and a fifth
of its other paragraphs (sentences, for articles of few paragraphs) left out (``rpm2-dev-thinned``). A
change that raises rpm2-dev while these drop fits those texts, not the news.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.corpus import RPM2, seeds, text_units  # noqa: E402
from monitor.evaluation import Scores, evaluate  # noqa: E402

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


def all_scores() -> dict[str, Scores]:
    with tempfile.TemporaryDirectory() as tmp:
        return {
            "rpm2-dev": evaluate(RPM2),
            "rpm2-dev-cut": evaluate(edited_rpm2(Path(tmp), thinned=False)),
            "rpm2-dev-thinned": evaluate(edited_rpm2(Path(tmp), thinned=True)),
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
    print(f"{'set':17} {'B3 P':>6} {'B3 R':>6} {'B3 F1':>6} {'pair F1':>7} {'stories':>8} {'gold':>5}")
    for name, s in scores.items():
        print(
            f"{name:17} {s.bcubed_precision:6.3f} {s.bcubed_recall:6.3f} {s.bcubed_f1:6.3f} {s.pairwise_f1:7.3f} "
            f"{s.predicted_stories:8d} {s.gold_stories:5d}"
        )
    failures = below_floors(scores)
    print("\n".join(failures) if failures else "all floors held")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
