"""Live grouping does not depend on arrival order: what `monitor run` shows once a burst is in is what a
batch would give, whatever came first."""

from __future__ import annotations

import logging
import random
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from benchmarks.corpus import LoopbackServer, article_page, reprints, rss, seeds
from monitor.pipeline.placement import Ingestor
from monitor.pipeline.prepare import Incoming
from monitor.storage import Article, Storage
from tests.support import MUSEUM, RAIL, loopback_env, postgres_database, query, run_cli, wait_until, write_feeds


def test_an_other_story_arriving_second_ends_in_a_story_of_its_own(tmp_path: Path, database_url: str) -> None:
    """The seeds all published on one day, and 004 (the Llama 2 release, another story with the same
    names) arriving second, when the Llama-for-defence story holds only 000: greedy placement alone can
    take it into that story, and nothing after would take it out. Two `monitor run --once` cycles, 000 and
    004 first, the rest after: exactly the two stories of the labels."""
    day = "2024-11-05"
    with LoopbackServer("127.0.0.2") as server:
        items = []
        for i, seed in enumerate(seeds()):
            url = f"{server.base}/actualites/{seed.name}.html"
            page = article_page(title=seed.title, body=seed.body, site="Veille", url=url, published=day)
            server.add(f"/actualites/{seed.name}.html", page)
            items.append(
                (
                    seed.name,
                    {
                        "title": seed.title,
                        "link": url,
                        "published": datetime.fromisoformat(f"{day}T09:{i:02d}:00+01:00"),
                    },
                )
            )
        feeds_file = write_feeds(tmp_path / "feeds.yaml", {"Veille": f"{server.base}/feed.xml"})
        env = loopback_env(database_url, feeds_file, host_min_interval="0")
        for wanted in (("000", "004"), ("000", "004", "001", "002", "003")):
            listed = [item for name in wanted for seed_name, item in items if seed_name == name]
            server.add("/feed.xml", rss("Veille", server.base, listed), "application/rss+xml")
            done = run_cli("run", "--once", env=env)
            assert done.returncode == 0, done.stderr
    rows = query(database_url, "SELECT url, story_id FROM articles ORDER BY url")
    stories: dict[int, set[str]] = {}
    for row in rows:
        stories.setdefault(row["story_id"], set()).add(row["url"].rsplit("/", 1)[1][:3])
    assert sorted(stories.values(), key=len) == [{"004"}, {"000", "001", "002", "003"}]
    live = query(database_url, "SELECT COUNT(*) AS n FROM stories WHERE article_count > 0")
    assert live == [{"n": 2}]
    moved = query(
        database_url, "SELECT a.url, e.other_story_id FROM story_events e JOIN articles a ON a.id = e.article_id"
    )
    # Placed in 000's story when it arrived (the trap), 004 was moved out of it: the history says so.
    assert all(row["url"].endswith("/004.html") and row["other_story_id"] == rows[0]["story_id"] for row in moved)


@pytest.mark.parametrize("seed", range(3))
def test_reprints_group_the_same_whichever_arrives_first(seed: int, database_url: str) -> None:
    """Three unrelated political stories, each reprinted by eight outlets with cuts of different lengths,
    all published at one moment, in an arrival order and batch sizes drawn from ``seed``. The first reprint
    to arrive is stored as the original and the others as its near-copies (or near-copies of those):
    every order gives the three stories of the labels, and every reprint sits in its original's story."""
    rng = random.Random(seed)
    order = list(enumerate(reprints(["T11_C1", "T14_C1", "T06_C1"], 8)))
    rng.shuffle(order)
    moment = datetime(2024, 11, 5, 9, 0, tzinfo=UTC)
    storage = Storage(database_url)
    storage.upgrade()
    ingestor = Ingestor(storage)
    start = 0
    while start < len(order):
        size = rng.randint(1, 6)
        incoming = [
            Incoming(
                url=f"https://media{n % 8}.example/g{article['group']}/a{n}.html",
                fetched_at=moment,
                title=article["title"],
                text=article["body"],
                published_at=moment,
                source=f"Média {n % 8}",
            )
            for n, article in order[start : start + size]
        ]
        ingestor.store_many([ingestor.prepare(one) for one in incoming])
        start += size
    with storage.repository() as repo:
        rows = repo.session.execute(select(Article.id, Article.url, Article.story_id, Article.duplicate_of_id))
        found = {row.id: row for row in rows}
    storage.engine.dispose()
    stories: dict[int, set[str]] = {}
    for row in found.values():
        stories.setdefault(row.story_id, set()).add(row.url.split("/")[3])
        if row.duplicate_of_id is not None:
            assert row.story_id == found[row.duplicate_of_id].story_id, row.url
    assert sorted(stories.values(), key=min) == [{"g0"}, {"g1"}, {"g2"}]


def _seed_incoming(name: str, body: str, title: str, minute: int) -> Incoming:
    published = datetime(2024, 11, 5, 9, minute, tzinfo=UTC)
    url = f"https://veille.example.fr/{name}.html"
    return Incoming(url, published, title=title, text=body, published_at=published, source="Veille", language="fr")


@pytest.mark.parametrize("other_first", [False, True], ids=["same-story", "other-story"])
def test_placement_decides_without_the_lock_and_again_when_what_it_read_changed(
    other_first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers on PostgreSQL. B places a report and holds the cluster lock (its transaction not yet
    committed) while A places another report: A decides without the lock (it sees nothing of B's yet) and
    then waits for it. When B commits, A asks what changed since it started. Another wording of B's
    announcement: B's new story shares its terms, so A decides again and joins it (one story, not two); and
    as B is placing beside it, A's next batches decide under the lock from the start, once, where deciding
    first would be wasted again. An unrelated dispatch: A keeps its decision and does not decide again."""
    reports = [_seed_incoming(seed.name, seed.body, seed.title, i + 1) for i, seed in enumerate(seeds()[:4])]
    with postgres_database() as url:
        storage_a, storage_b = Storage(url), Storage(url)
        storage_a.ensure_schema(upgrade=True)
        a, b = Ingestor(storage_a), Ingestor(storage_b)
        a.store_many([a.prepare(_seed_incoming("warm-up", MUSEUM[1], MUSEUM[0], 0))], regroup=False)
        caplog.set_level(logging.DEBUG, logger="monitor.pipeline.placement")

        def race(by_b: Incoming, by_a: Incoming) -> None:
            """B holds the lock with ``by_b`` placed, uncommitted, until A waits for it placing ``by_a``."""
            b_holds, a_waits = threading.Event(), threading.Event()

            def hold(_repo: object, _outcomes: object) -> None:
                b_holds.set()
                assert a_waits.wait(60), "A never waited for the lock"

            worker_b = threading.Thread(target=lambda: b.store_many([b.prepare(by_b)], hold, regroup=False))
            worker_b.start()
            assert b_holds.wait(60)
            worker_a = threading.Thread(target=lambda: a.store_many([a.prepare(by_a)], regroup=False))
            worker_a.start()
            waiting = "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            try:
                assert wait_until(lambda: query(url, waiting)[0]["n"] == 1, 60, 0.05), "A did not reach the lock"
            finally:
                a_waits.set()
                worker_b.join(60)
                worker_a.join(60)

        race(_seed_incoming("rail", RAIL[1], RAIL[0], 1) if other_first else reports[0], reports[1])
        if not other_first:
            race(reports[2], reports[3])
        rows = query(url, "SELECT url, story_id FROM articles ORDER BY id")
    stories = {r["url"].rsplit("/", 1)[1]: r["story_id"] for r in rows}
    decided_again = [r for r in caplog.records if "decided again under the lock" in r.getMessage()]
    if other_first:
        assert stories["rail.html"] != stories["001.html"]
        assert not decided_again
    else:
        assert len({stories[f"00{i}.html"] for i in range(4)}) == 1
        assert len(decided_again) == 1  # the first race only: the second was decided once, under the lock
