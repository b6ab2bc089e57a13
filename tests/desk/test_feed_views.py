"""What is stuck, and why a feed's next fetch is far off, after a real run: a site whose robots.txt is
unreachable, a feed asking for six hours between reads (Cache-Control max-age) and one answering 503 with
Retry-After, read back through `monitor run --once`, `monitor items`, `monitor feeds`, /api/feeds and the
Flux pages, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from benchmarks.corpus import LoopbackServer, article_page, rss, seeds
from tests.support import loopback_env, run_cli, serving, write_feeds


def _ok(*args: str, env: dict[str, str]) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _articles(server: LoopbackServer, chosen: range, now: datetime) -> list[dict[str, object]]:
    """Article pages on ``server``, as feed items published minutes ago (too recent to stretch the interval)."""
    items: list[dict[str, object]] = []
    for i in chosen:
        seed = seeds()[i]
        url = f"{server.base}/article-{seed.name}.html"
        server.add(
            f"/article-{seed.name}.html",
            article_page(title=seed.title, body=seed.body, site="Site", url=url, published=seed.published),
        )
        items.append({"title": seed.title, "link": url, "published": now - timedelta(minutes=5 * (i + 1))})
    return items


def test_stuck_items_and_next_fetch_reasons_after_a_run(database_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with (
        LoopbackServer("127.0.0.71") as down,
        LoopbackServer("127.0.0.72") as cached,
        LoopbackServer("127.0.0.73") as busy,
    ):
        down.add("/robots.txt", b"overloaded", "text/plain", status=503)
        stuck = _articles(down, range(4), now)
        down.add("/une.xml", rss("Une", down.base, stuck[:2]), "application/rss+xml")
        down.add("/tech.xml", rss("Tech", down.base, stuck[2:]), "application/rss+xml")
        cached.add(
            "/feed.xml",
            rss("Lent", cached.base, _articles(cached, range(4, 5), now)),
            "application/rss+xml",
            headers={"Cache-Control": "public, max-age=21600"},
        )
        busy.add("/feed.xml", b"busy", "text/plain", status=503, headers={"Retry-After": "7200"})
        feeds_file = write_feeds(
            tmp_path / "feeds.yaml",
            {
                "Une": down.base + "/une.xml",
                "Tech": down.base + "/tech.xml",
                "Lent": cached.base + "/feed.xml",
                "Surchargé": busy.base + "/feed.xml",
            },
            extra=", interval: 30m",
        )
        env = {**loopback_env(database_url, feeds_file, host_min_interval="0"), "COLUMNS": "250"}
        run = run_cli("run", "--once", env=env)
        assert run.returncode == 0, run.stderr
        robots_fetches = [path for path, _headers in down.requests if path == "/robots.txt"]
        page_fetches = [path for path, _headers in down.requests if path.startswith("/article-")]

    # The run says what it left: four pages wait for their site's robots.txt, one article was added.
    assert "3 feeds fetched, 1 failed" in run.stdout and "1 article added" in run.stdout, run.stdout
    assert "0 items failed, 4 left pending" in run.stdout, run.stdout
    assert page_fetches == [] and len(robots_fetches) == 1  # asked once for the site, not once a page
    # One warning for the site, naming it and the feed that asked; none for each of its pages.
    warnings = [line for line in run.stderr.splitlines() if "robots.txt" in line]
    assert len(warnings) == 1, run.stderr
    assert re.search(rf"feed (Une|Tech): robots\.txt of 127\.0\.0\.71:{down.port} unavailable", warnings[0])
    assert "HTTP 503" in warnings[0]
    assert not [line for line in run.stderr.splitlines() if "article-00" in line], run.stderr

    # monitor items --pending: the four pages, each with the reason.
    pending = json.loads(_ok("items", "--pending", "--json", env=env))
    assert pending["total"] == 4 and {i["feed"] for i in pending["items"]} == {"Une", "Tech"}
    for item in pending["items"]:
        assert item["state"] == "pending" and item["attempts"] == 1
        assert "robots.txt unavailable" in item["last_error"] and "HTTP 503" in item["last_error"]
        assert datetime.fromisoformat(item["next_attempt_at"]) > now + timedelta(minutes=4)
    listed = _ok("items", "--pending", env=env)
    assert "4 items pending" in listed and listed.count("robots.txt unavailable") == 4, listed
    assert "0 items failed" in _ok("items", "--failed", env=env)

    # monitor feeds --json: pending counts, and why each next fetch is when it is.
    rows = {r["name"]: r for r in json.loads(_ok("feeds", "--json", env=env))}
    assert {n: (r["pending_items"], r["failed_items"]) for n, r in rows.items()} == {
        "Une": (2, 0),
        "Tech": (2, 0),
        "Lent": (0, 0),
        "Surchargé": (0, 0),
    }
    assert {n: (r["next_fetch_reason"], r["next_fetch_delay_s"]) for n, r in rows.items()} == {
        "Une": ("interval", 1800),
        "Tech": ("interval", 1800),
        "Lent": ("cache_control", 21600),
        "Surchargé": ("retry_after", 7200),
    }
    assert rows["Surchargé"]["state"] == "failing" and rows["Surchargé"]["consecutive_failures"] == 1
    for name, seconds in (("Une", 1800), ("Lent", 21600), ("Surchargé", 7200)):
        ahead = (datetime.fromisoformat(rows[name]["next_fetch_at"]) - now).total_seconds()
        assert seconds * 0.85 <= ahead <= seconds * 1.15, (name, ahead)

    # monitor feeds: the same, in words, with local and relative times.
    table = _ok("feeds", env=env)
    assert "Europe/Paris" in table and ("(in 5 h)" in table or "(in 6 h)" in table), table
    assert "the server's Cache-Control max-age 6 h (configured every 30 min)" in table, table
    assert "the server's Retry-After 2 h (after 1 failure)" in table, table
    assert table.count("every 30 min") == 3 and "adaptive" not in table, table

    # The desk over real HTTP: /api/feeds, the Flux page and a feed's pending items.
    with serving(env) as base:
        assert httpx.get(f"{base}/api/feeds").json() == json.loads(_ok("feeds", "--json", env=env))
        page = httpx.get(f"{base}/feeds").text
        une = rows["Une"]["id"]
        assert f'href="/feeds/{une}/items?state=pending">2</a>' in page
        assert "le serveur demande 6 h entre deux lectures (Cache-Control max-age" in page
        assert "le serveur a demandé d'attendre 2 h (Retry-After), après 1 échec consécutif" in page
        assert page.count('data-reason="interval"') == 2 and "toutes les 30 min" in page
        items = httpx.get(f"{base}/feeds/{une}/items", params={"state": "pending"}).text
        assert "2 articles" in items and items.count("robots.txt unavailable") == 2
        assert f"{down.base}/article-000.html" in items and "prochain essai dans" in items
