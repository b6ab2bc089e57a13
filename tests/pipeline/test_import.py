"""`monitor import`: the same pipeline as fetched articles, line errors named, re-import a no-op."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_cli, stories_of, write_seeds


@pytest.mark.parametrize("same_day", [False, True], ids=["own-dates", "same-day"])
def test_import_groups_seeds(tmp_path: Path, database_url: str, same_day: bool) -> None:
    archive = tmp_path / "seeds.jsonl"
    write_seeds(archive, same_day=same_day)
    env = {"MONITOR_DATABASE_URL": database_url}
    result = run_cli("import", str(archive), env=env)
    assert result.returncode == 0, result.stderr
    assert "5 articles added" in result.stdout
    story = stories_of(database_url)
    assert story["000"] == story["001"] == story["002"] == story["003"] != story["004"]

    again = run_cli("import", str(archive), env=env)
    assert "0 articles added, 5 already known" in again.stdout
    assert len(stories_of(database_url)) == 5


def test_bad_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    archive = tmp_path / "mixed.jsonl"
    bad = [
        '{"url": "https://a.example.fr/x", "title": "t", "text": "du texte", "published_at": "hier"}',
        "{not json",
        '{"url": "ftp://a.example.fr/y", "text": "t", "published_at": "2024-11-05T10:00:00Z"}',
        '{"url": "https://a.example.fr/z", "title": "sans corps", "published_at": "2024-11-05T10:00:00Z"}',
    ]
    write_seeds(archive, same_day=False, extra_lines=bad)
    database_url = f"sqlite:///{tmp_path}/import.db"
    result = run_cli("import", str(archive), env={"MONITOR_DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert "5 articles added, 0 already known, 4 lines skipped" in result.stdout
    for number, words in ((3, "published_at"), (4, "not JSON"), (5, "url"), (6, "needs a non-empty 'text' or 'html'")):
        assert any(
            line.startswith(f"{archive}:line {number}:") and words in line for line in result.stderr.splitlines()
        ), (number, result.stderr)
    story = stories_of(database_url)
    assert story["000"] == story["001"] == story["002"] == story["003"] != story["004"]
