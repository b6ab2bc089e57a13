"""End to end: seed articles served as pages and feeds from several loopback hosts, through `monitor run --once`."""

from __future__ import annotations

import contextlib
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from benchmarks.corpus import LoopbackServer, article_page, rss, seeds
from tests.support import connected, loopback_env, run_cli, running_daemon, wait_until


@pytest.mark.parametrize("extract_processes", ["0", "1"])  # extraction in a thread, or in a process
def test_run_once_groups_the_seeds(seed_sites, database_url: str, extract_processes: str) -> None:  # type: ignore[no-untyped-def]
    feeds_file, servers = seed_sites
    env = loopback_env(database_url, feeds_file, host_min_interval="0", extract_processes=extract_processes)
    result = run_cli("run", "--once", env=env)
    assert result.returncode == 0, result.stderr
    assert "6 feeds fetched, 0 failed; 7 new items, 5 articles added in 2 stories (0 near-copies)" in result.stdout

    engine = create_engine(database_url)
    with engine.connect() as db:
        rows = db.execute(
            text("SELECT url, title, text, source, story_id, published_at FROM articles ORDER BY url")
        ).all()
        assert len(rows) == 5
        by_seed = {row.url.rsplit("/", 1)[1][:3]: row for row in rows}
        assert sorted(by_seed) == ["000", "001", "002", "003", "004"]
        for seed in seeds():
            row = by_seed[seed.name]
            assert "utm_" not in row.url and "#" not in row.url
            # the article's own sentences are there, the site furniture is not
            assert seed.body.splitlines()[-1].strip()[:60] in row.text
            for boilerplate in ("Super article", "Tous droits réservés", "À lire aussi", "S'abonner", "cookies"):
                assert boilerplate not in row.text, (seed.name, boilerplate)
        story = {name: row.story_id for name, row in by_seed.items()}
        assert story["000"] == story["001"] == story["002"] == story["003"]
        assert story["004"] != story["000"]
        meta_story = db.execute(
            text("SELECT article_count, outlet_count FROM stories WHERE id = :id"), {"id": story["000"]}
        ).one()
        assert tuple(meta_story) == (4, 4)
        items = db.execute(text("SELECT state, COUNT(*) FROM feed_items GROUP BY state")).all()
        assert dict(items) == {"done": 7}  # the aggregator's two items resolved to the stored articles

    # A second run adds nothing, and each article page was fetched exactly once over both runs.
    again = run_cli("run", "--once", env=env)
    assert again.returncode == 0, again.stderr
    with engine.connect() as db:
        assert db.execute(text("SELECT COUNT(*) FROM articles")).scalar_one() == 5
    page_hits = [path for server in servers for path, _ in server.requests if path.startswith("/actualites/")]
    assert len(page_hits) == 5
    engine.dispose()


def test_private_addresses_are_refused_by_default(seed_sites, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    feeds_file, servers = seed_sites
    env = {"MONITOR_DATABASE_URL": f"sqlite:///{tmp_path}/refused.db", "MONITOR_FEEDS_FILE": str(feeds_file)}
    result = run_cli("run", "--once", env=env)
    assert result.returncode == 1  # nothing could run at all
    assert "0 feeds fetched, 6 failed" in result.stdout
    assert "refused" in result.stderr and "127.0.0.2" in result.stderr
    assert all(not server.requests for server in servers)  # refused before connecting


def test_the_cycle_says_how_its_articles_were_placed(tmp_path: Path) -> None:
    """A report, its wire reprint under another URL, and an unrelated report: two stories begun, one copy."""
    clegg, llama = seeds()[0], seeds()[4]
    with LoopbackServer("127.0.0.9") as server:
        now = datetime.now().astimezone()
        items = []
        for path, title, body in (
            ("/clegg.html", clegg.title, clegg.body),
            ("/depeche.html", f"{clegg.title} (dépêche)", clegg.body),
            ("/llama.html", llama.title, llama.body),
        ):
            url = server.base + path
            page = article_page(title=title, body=body, site="Agence", url=url, published=clegg.published)
            items.append({"title": title, "link": server.add(path, page), "published": now})
        server.add("/feed.xml", rss("Agence", server.base, items), "application/rss+xml")
        feeds_file = tmp_path / "feeds.yaml"
        feeds_file.write_text(f'feeds:\n  - {{name: Agence, url: "{server.base}/feed.xml"}}\n', encoding="utf-8")
        env = loopback_env(f"sqlite:///{tmp_path}/m.db", feeds_file, host_min_interval="0")
        result = run_cli("run", "--once", env=env)
    assert "3 articles added in 2 stories (1 near-copy)" in result.stdout, result


@pytest.mark.parametrize("extract_processes", ["0", "1"])  # the error crosses the process boundary intact
def test_unfetchable_and_empty_pages_are_recorded_with_the_reason(tmp_path: Path, extract_processes: str) -> None:
    with LoopbackServer("127.0.0.8") as server:
        now = datetime.now().astimezone()
        empty = server.add("/vide.html", "<html><body><nav>Accueil</nav><p>Court.</p></body></html>")
        items = [
            {"title": "Page disparue", "link": server.base + "/disparue.html", "published": now},
            {"title": "Page vide", "link": empty, "published": now},
            {"title": "Serveur en panne", "link": server.base + "/panne.html", "published": now},
        ]
        server.routes["/panne.html"] = (503, {"Content-Type": "text/plain"}, b"maintenance")
        server.add("/feed.xml", rss("Cassé", server.base, items), "application/rss+xml")
        feeds_file = tmp_path / "feeds.yaml"
        feeds_file.write_text(f'feeds:\n  - {{name: Cassé, url: "{server.base}/feed.xml"}}\n', encoding="utf-8")
        database_url = f"sqlite:///{tmp_path}/broken.db"
        env = loopback_env(database_url, feeds_file, host_min_interval="0", extract_processes=extract_processes)
        result = run_cli("run", "--once", env=env)
    assert result.returncode == 0, result.stderr
    with connected(database_url) as db:
        rows = {r.title: r for r in db.execute(text("SELECT title, state, attempts, last_error FROM feed_items"))}
        assert db.execute(text("SELECT COUNT(*) FROM articles")).scalar_one() == 0
    assert rows["Page disparue"].state == "failed" and "HTTP 404" in rows["Page disparue"].last_error
    assert rows["Page vide"].state == "failed" and "no article" in rows["Page vide"].last_error
    # a server error is transient: the item stays pending, to be retried with backoff
    assert rows["Serveur en panne"].state == "pending" and "HTTP 503" in rows["Serveur en panne"].last_error
    assert rows["Serveur en panne"].attempts == 1


def test_daemon_runs_until_sigterm(seed_sites, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    feeds_file, _servers = seed_sites
    database_url = f"sqlite:///{tmp_path}/daemon.db"
    env = loopback_env(database_url, feeds_file, host_min_interval="0", poll_seconds="1")
    engine = create_engine(database_url)

    def stored() -> int:
        with contextlib.suppress(Exception), engine.connect() as db:
            return int(db.execute(text("SELECT COUNT(*) FROM articles")).scalar_one())
        return 0

    with running_daemon(env) as daemon:
        wait_until(lambda: stored() >= 5, timeout_s=120)
        assert stored() == 5
        assert daemon.process.poll() is None  # still running after its first cycle
        daemon.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        daemon.process.wait(timeout=15)
        assert time.monotonic() - stopped < 10
    engine.dispose()
    assert daemon.process.returncode == 0, daemon.stderr
    assert "monitor stopped" in daemon.stderr


def test_a_second_daemon_on_one_sqlite_file_is_refused(seed_sites, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    feeds_file, _servers = seed_sites
    env = loopback_env(f"sqlite:///{tmp_path}/one.db", feeds_file, poll_seconds="1", host_min_interval="0")
    lock = tmp_path / "one.db.daemon.lock"
    with running_daemon(env) as first:
        assert wait_until(lambda: lock.is_file() and lock.read_text() == str(first.process.pid), 60, 0.1)
        second = run_cli("run", "--once", env=env)
        assert second.returncode == 2
        assert f"another monitor daemon (pid {first.process.pid})" in second.stderr and "PostgreSQL" in second.stderr
    assert run_cli("run", "--once", env=env).returncode == 0  # once the first has stopped, fine
