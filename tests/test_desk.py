"""The read model behind the pages, the API and the CLI: counts that stop early, outlets found along their
index, and the next digest's preview, on real SQLite and PostgreSQL databases filled through the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from monitor.config import DigestConfig
from monitor.desk import read
from monitor.desk.params import StoryFilter
from monitor.desk.read import Desk
from monitor.digests.build import build
from monitor.storage import Storage
from tests.support import query, seed_database, serving


def test_counts_stop_early_and_pages_still_follow_the_ranking(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_database(database_url, tmp_path)
    desk = Desk(database_url)
    try:
        listed = query(database_url, "SELECT id FROM stories WHERE article_count > 0")
        full = desk.stories(StoryFilter())
        assert (full.total, full.total_exact) == (len(listed), True)
        assert len(listed) >= 3
        monkeypatch.setattr(read, "COUNT_CAP", 1)
        first = desk.stories(StoryFilter(), limit=1)
        # Counting stopped one story past the page: "more than 1", and a next page.
        assert (first.total, first.total_exact, first.next_offset) == (1, False, 1)
        following = [desk.stories(StoryFilter(), offset=k, limit=1).items[0].id for k in range(len(listed))]
        assert following == [row.id for row in full.items]
        last = desk.stories(StoryFilter(), offset=len(listed) - 1, limit=1)
        assert (last.total, last.total_exact, last.next_offset) == (len(listed), True, None)
    finally:
        desk.close()


def test_outlets_are_every_stored_source(database_url: str, tmp_path: Path) -> None:
    seed_database(database_url, tmp_path)
    desk = Desk(database_url)
    try:
        stored = sorted(row["source"] for row in query(database_url, "SELECT DISTINCT source FROM articles"))
        assert len(stored) >= 4
        assert sorted(desk.outlets()) == stored
        one = stored[-1]
        narrowed = desk.stories(StoryFilter(outlet=one.upper()))
        wanted = query(database_url, f"SELECT DISTINCT story_id FROM articles WHERE source = '{one}'")
        assert sorted(row.id for row in narrowed.items) == sorted(row["story_id"] for row in wanted)
    finally:
        desk.close()


def test_the_next_digest_preview_is_what_would_be_sent(database_url: str, tmp_path: Path) -> None:
    env = seed_database(database_url, tmp_path)
    config = DigestConfig(name="archive", recipients=("veille@example.fr",), schedule="0 7 * * *", period_s=31 * 86400)
    moment = datetime(2024, 11, 7, 12, 0, tzinfo=UTC)  # the seeds' last days
    desk = Desk(database_url)
    try:
        preview = desk.next_digest(config, moment)
    finally:
        desk.close()
    assert preview is not None
    assert preview.end == datetime(2024, 11, 8, 6, 0, tzinfo=UTC)  # 07:00 in Paris, the next morning
    assert preview.end - preview.start == timedelta(days=31)
    assert preview.stories and preview == build(Storage(database_url), config, preview.end)

    # Served: the configured digest's next run, in the future, with its stories so far (none: the seeds are old).
    with serving(env) as base:
        page = httpx.get(f"{base}/digests", timeout=30)
        api = httpx.get(f"{base}/api/digests", timeout=30).json()
    assert page.status_code == 200 and "Prochain envoi le" in page.text and "aucun sujet pour l'instant" in page.text
    (upcoming,) = api["next"]
    assert upcoming["digest"] == "matin" and upcoming["stories"] == []
    assert datetime.fromisoformat(upcoming["period_end"]) > datetime.now(UTC)
