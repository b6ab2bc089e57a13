"""French full-text search: accents and word endings handled, the same answers on SQLite (FTS5) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from monitor.pipeline.importing import import_file
from monitor.pipeline.placement import Ingestor
from monitor.search import parse_query
from monitor.storage import Storage
from tests.support import connected, digest_corpus, run_cli

# Expected sets checked with grep on the texts (Reprise is the wire copy of 001, Journal 0/1 two rpm2 articles).
QUERIES = {
    "Etats-Unis": {"000", "001", "002", "003", "Reprise", "Journal 0"},  # no accent in the query, "États-Unis" in text
    "militaire": {"000", "001", "002", "Reprise"},  # the singular finds "militaires" too
    '"Nick Clegg"': {"000", "001", "003", "004", "Reprise"},
    '"Nick Clegg" stupide': {"004"},
    "Lockheed": {"000", "002", "003"},
    "dalaï-lama Tibet": {"Journal 0", "Journal 1"},
    "photosynthèse": set(),
}


def _answers(database_url: str, tmp_path: Path) -> dict[str, set[str]]:
    storage = Storage(database_url)
    storage.upgrade()
    assert import_file(digest_corpus(tmp_path), Ingestor(storage)).errors == []
    answers = {}
    with storage.repository() as repo:
        sources = {a.id: a.source for story in repo.latest_stories(50) for a in repo.story_articles(story[0].id)}
        for query in QUERIES:
            ids = repo.search_article_ids(parse_query(query))
            answers[query] = {sources[i].removeprefix("Média ").removeprefix("Agence ") for i in ids}
    storage.engine.dispose()
    return answers


def test_same_answers_on_sqlite_and_postgresql(tmp_path: Path, postgres_url: str) -> None:
    on_sqlite = _answers(f"sqlite:///{tmp_path}/s.db", tmp_path)
    on_postgres = _answers(postgres_url, tmp_path)
    for query, expected in QUERIES.items():
        assert on_sqlite[query] == expected, (query, on_sqlite[query])
        assert on_postgres[query] == expected, (query, on_postgres[query])


def test_postgresql_search_uses_the_french_index(tmp_path: Path, postgres_url: str) -> None:
    _answers(postgres_url, tmp_path)
    with connected(postgres_url) as db:
        db.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(
            row[0]
            for row in db.execute(
                text(
                    "EXPLAIN SELECT id FROM articles WHERE to_tsvector('french'::regconfig, "
                    "monitor_unaccent(title || ' ' || text)) @@ plainto_tsquery('french'::regconfig, "
                    "monitor_unaccent('militaires'))"
                )
            )
        )
    assert "ix_articles_fts" in plan, plan


def test_search_command(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path}/cli.db"
    assert run_cli("import", str(digest_corpus(tmp_path)), env={"MONITOR_DATABASE_URL": database_url}).returncode == 0
    result = run_cli("search", '"Nick Clegg" militaires', env={"MONITOR_DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert "1 story matches" in result.stdout
    empty = run_cli("search", "le la les", env={"MONITOR_DATABASE_URL": database_url})
    assert empty.returncode == 2 and "no searchable word" in empty.stderr


@pytest.mark.parametrize("query", ['"open source"', "Meta Llama"])
def test_parse_query_keeps_phrases(query: str) -> None:
    parsed = parse_query(query)
    assert str(parsed) == query if '"' in query else parsed.terms == ("Meta", "Llama")
