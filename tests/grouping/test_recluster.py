"""`monitor recluster`: rebuild story assignments from stored text after tuning, deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from benchmarks.corpus import RPM2
from tests.support import connected, run_cli


def _grouping(database_url: str) -> tuple[set[frozenset[str]], int, int]:
    with connected(database_url) as db:
        rows = db.execute(text("SELECT url, story_id FROM articles")).all()
        stories = db.execute(text("SELECT COUNT(*) FROM stories WHERE article_count > 0")).scalar_one()
        # a story emptied by the merge pass stays only as the record of where its articles went
        unexplained = db.execute(
            text("SELECT COUNT(*) FROM stories WHERE article_count = 0 AND merged_into_id IS NULL")
        ).scalar_one()
        assert unexplained == 0
        documents = db.execute(text("SELECT value FROM meta WHERE key = 'document_count'")).scalar_one()
    groups: dict[int, set[str]] = {}
    for url, story in rows:
        groups.setdefault(story, set()).add(url)
    return {frozenset(g) for g in groups.values()}, stories, int(documents)


@pytest.mark.slow
def test_recluster_is_deterministic_and_follows_the_settings(tmp_path: Path, database_url: str) -> None:
    archive = tmp_path / "rpm2.jsonl"
    archive.write_text("\n".join(RPM2.read_text(encoding="utf-8").splitlines()[:80]) + "\n", encoding="utf-8")
    env = {"MONITOR_DATABASE_URL": database_url}
    assert run_cli("import", str(archive), env=env).returncode == 0
    imported, stories, documents = _grouping(database_url)
    assert documents == 80 and stories == len(imported)

    again = run_cli("recluster", env=env)
    assert again.returncode == 0, again.stderr
    assert "80 articles placed again" in again.stdout
    assert _grouping(database_url) == (imported, stories, 80)  # same input, same order: same stories

    strict = run_cli("recluster", env={**env, "MONITOR_STORY_THRESHOLD": "0.6"})
    assert strict.returncode == 0, strict.stderr
    tuned, tuned_stories, _ = _grouping(database_url)
    assert tuned_stories > stories and tuned != imported  # a stricter threshold splits stories
    assert _grouping(database_url)[0] == tuned

    # Only a time range: articles before it keep their stories, the rest follow the default settings again.
    first_day = json.loads(archive.read_text(encoding="utf-8").splitlines()[0])["published_at"][:10]
    partial = run_cli("recluster", "--since", f"{first_day}T12:00:00+00:00", env=env)
    assert partial.returncode == 0, partial.stderr
    count = int(partial.stdout.split()[0])
    assert 0 < count < 80
    full = run_cli("recluster", env=env)
    assert full.returncode == 0 and _grouping(database_url)[0] == imported


def test_recluster_keeps_near_copies_and_explanations(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path}/nc.db"
    rows = [json.loads(line) for line in RPM2.read_text(encoding="utf-8").splitlines()[:10]]
    copy = {**rows[0], "url": "https://reprise.example.fr/x", "source": "reprise", "title": "Reprise"}
    copy["published_at"] = rows[-1]["published_at"]
    archive = tmp_path / "nc.jsonl"
    archive.write_text("\n".join(json.dumps(r) for r in [*rows, copy]) + "\n", encoding="utf-8")
    env = {"MONITOR_DATABASE_URL": database_url}
    assert run_cli("import", str(archive), env=env).returncode == 0
    assert run_cli("recluster", env=env).returncode == 0
    with connected(database_url) as db:
        placed = db.execute(
            text(
                "SELECT a.placement_method, o.url AS original FROM articles a "
                "LEFT JOIN articles o ON o.id = a.duplicate_of_id WHERE a.url = :u"
            ),
            {"u": "https://reprise.example.fr/x"},
        ).one()
        methods = {r[0] for r in db.execute(text("SELECT placement_method FROM articles"))}
    assert placed.placement_method == "near_copy" and placed.original == rows[0]["url"]
    assert methods <= {"near_copy", "story_match", "new_story", "moved"} and "new_story" in methods
