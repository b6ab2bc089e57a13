"""The README's example queries run, as written, on SQLite and PostgreSQL over ingested seeds."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import text

from tests.support import connected, run_cli, write_seeds

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_queries() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [q.strip().rstrip(";") for block in blocks for q in block.split(";\n") if q.strip()]


def test_readme_queries_run(tmp_path: Path, database_url: str) -> None:
    archive = tmp_path / "seeds.jsonl"
    write_seeds(archive, same_day=False)
    assert run_cli("import", str(archive), env={"MONITOR_DATABASE_URL": database_url}).returncode == 0
    queries = _readme_queries()
    assert len(queries) == 8
    with connected(database_url) as db:
        results = [db.execute(text(q)).mappings().all() for q in queries]
    latest, coverage, why, merged, history = results[:5]
    assert {row["article_count"] for row in latest} == {4, 1}
    assert len(coverage) == 4 and len({row["source"] for row in coverage}) == 4
    assert sorted(row["placement_method"] for row in why) == ["new_story", "story_match", "story_match", "story_match"]
    assert all(row["matched_story_id"] is not None for row in why if row["placement_method"] == "story_match")
    assert merged == []  # regrouping keeps 004 (same names, another event) apart from 000-003
    assert all(row["kind"] in ("moved", "split", "merged") and row["reason"] for row in history)
