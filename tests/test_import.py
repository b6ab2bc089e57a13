"""`monitor import`: the same pipeline as fetched articles, line errors named, re-import a no-op."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support import seeds
from tests.test_pipeline import run_cli


def _write_seeds(path: Path, *, same_day: bool, extra_lines: list[str] | None = None) -> None:
    lines = []
    for seed in seeds():
        day = "2024-11-05" if same_day else seed.published
        lines.append(
            json.dumps(
                {
                    "url": f"https://outlet-{seed.name}.example.fr/article?utm_campaign=x",
                    "title": seed.title,
                    "text": seed.body,
                    "published_at": f"{day}T10:00:00+01:00",
                    "source": f"outlet-{seed.name}",
                    "story": "never read by the product",
                }
            )
        )
    lines[2:2] = extra_lines or []
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _stories(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    with engine.connect() as db:
        rows = db.execute(text("SELECT source, story_id FROM articles")).all()
    engine.dispose()
    return {source.removeprefix("outlet-"): story for source, story in rows}


@pytest.mark.parametrize("same_day", [False, True], ids=["own-dates", "same-day"])
def test_import_groups_seeds(tmp_path: Path, database_url: str, same_day: bool) -> None:
    archive = tmp_path / "seeds.jsonl"
    _write_seeds(archive, same_day=same_day)
    env = {"MONITOR_DATABASE_URL": database_url}
    result = run_cli("import", str(archive), env=env)
    assert result.returncode == 0, result.stderr
    assert "5 articles added" in result.stdout
    story = _stories(database_url)
    assert story["000"] == story["001"] == story["002"] == story["003"] != story["004"]

    again = run_cli("import", str(archive), env=env)
    assert "0 articles added, 5 already known" in again.stdout
    assert len(_stories(database_url)) == 5


def test_bad_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    archive = tmp_path / "mixed.jsonl"
    bad = [
        '{"url": "https://a.example.fr/x", "title": "t", "text": "du texte", "published_at": "hier"}',
        "{not json",
        '{"url": "ftp://a.example.fr/y", "text": "t", "published_at": "2024-11-05T10:00:00Z"}',
        '{"url": "https://a.example.fr/z", "title": "sans corps", "published_at": "2024-11-05T10:00:00Z"}',
    ]
    _write_seeds(archive, same_day=False, extra_lines=bad)
    database_url = f"sqlite:///{tmp_path}/import.db"
    result = run_cli("import", str(archive), env={"MONITOR_DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert "5 articles added, 0 already known, 4 lines skipped" in result.stdout
    for number, words in ((3, "published_at"), (4, "not JSON"), (5, "url"), (6, "needs a non-empty 'text' or 'html'")):
        assert any(
            line.startswith(f"{archive}:line {number}:") and words in line for line in result.stderr.splitlines()
        ), (number, result.stderr)
    story = _stories(database_url)
    assert story["000"] == story["001"] == story["002"] == story["003"] != story["004"]
