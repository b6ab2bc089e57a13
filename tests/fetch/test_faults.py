"""The daemon against servers that misbehave: every fault recorded against its feed or URL, good items still stored.

All servers are real HTTP servers on loopback addresses; every test is bounded in time.
"""

from __future__ import annotations

import gzip
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from benchmarks.corpus import LoopbackServer, article_page, rss, seeds
from tests.support import cycle, good_site, query, write_feeds


def drip(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(50):  # one byte every 0.3 s: never trips a read timeout, only the request deadline
        try:
            handler.wfile.write(b"<")
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(0.3)


def hang(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(8)  # accepts, then says nothing


def test_feed_faults_are_recorded_and_good_items_still_stored(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with LoopbackServer("127.0.0.21") as bad, LoopbackServer("127.0.0.22") as good:
        bomb = gzip.compress(b"\0" * 200_000_000, compresslevel=9)
        stale = rss("x", bad.base, [{"title": "Un", "link": bad.base + "/un.html", "published": now}])
        feeds = {
            "drip": bad.base + "/drip.xml",
            "hang": bad.base + "/hang.xml",
            "huge": bad.base + "/huge.xml",
            "bomb": bad.base + "/bomb.xml",
            "loop": bad.base + "/loop.xml",
            "private": bad.base + "/private.xml",
            "ratelimited": bad.base + "/429.xml",
            "gone": bad.base + "/gone.xml",
            "html": bad.base + "/html.xml",
            "challenge": bad.base + "/challenge.xml",
            "good": good_site(good),
        }
        bad.routes["/drip.xml"] = drip
        bad.routes["/hang.xml"] = hang
        bad.add("/huge.xml", stale.encode() + b"<!--" + b"x" * 3_000_000 + b"-->", "application/rss+xml")
        bad.add("/bomb.xml", bomb, "application/rss+xml", headers={"Content-Encoding": "gzip"})
        bad.add("/loop.xml", b"", status=302, headers={"Location": "/loop.xml"})
        bad.add("/private.xml", b"", status=302, headers={"Location": "http://10.1.2.3/feed.xml"})
        bad.add("/429.xml", b"slow down", "text/plain", status=429, headers={"Retry-After": "7200"})
        bad.add("/gone.xml", b"gone", "text/plain", status=410)
        bad.add("/html.xml", "<!DOCTYPE html><html><body><h1>Notre nouveau site</h1></body></html>")
        bad.add(
            "/challenge.xml",
            "<html><head><title>Just a moment...</title></head><body>"
            "<div id='challenge-platform'>Checking your browser</div></body></html>",
        )
        database_url = f"sqlite:///{tmp_path}/faults.db"
        started = time.monotonic()
        report = cycle(database_url, write_feeds(tmp_path / "feeds.yaml", feeds))
        assert time.monotonic() - started < 30
    assert (report.feeds_ok, report.feeds_failed, report.articles_added) == (1, 10, 1)
    state = {row["name"]: row for row in query(database_url, "SELECT * FROM feeds")}
    expected = {
        "drip": "timeout",
        "hang": "timeout",
        "huge": "too_large",
        "bomb": "too_large",
        "loop": "redirects",
        "private": "refused",
        "ratelimited": "http",
        "gone": "http",
        "html": "not_a_feed",
        "challenge": "challenge",
    }
    for name, kind in expected.items():
        assert state[name]["last_error_kind"] == kind, (name, state[name]["last_error"])
        assert state[name]["consecutive_failures"] == 1
        assert feeds[name].split("/")[-1] in state[name]["last_error"]  # the error names the URL
    assert "10.1.2.3" in state["private"]["last_error"]
    assert not state["gone"]["enabled"] and "410" in state["gone"]["disabled_reason"]
    assert all(state[name]["enabled"] for name in expected if name != "gone")
    retry_at = datetime.fromisoformat(str(state["ratelimited"]["next_fetch_at"])).replace(tzinfo=UTC)
    assert retry_at - now >= timedelta(seconds=7200 * 0.9)  # Retry-After honoured
    assert state["good"]["consecutive_failures"] == 0 and state["good"]["last_success_at"] is not None
    assert len(query(database_url, "SELECT id FROM articles")) == 1


def test_malformed_feeds_and_odd_dates_still_give_their_items(tmp_path: Path) -> None:
    with LoopbackServer("127.0.0.23") as server:
        pages = []
        for i, seed in enumerate(seeds()[:3]):
            pages.append(
                server.add(
                    f"/a{i}.html",
                    article_page(
                        title=seed.title,
                        body=seed.body,
                        site="Site",
                        url=f"{server.base}/a{i}.html",
                        published=seed.published,
                    ),
                )
            )
        malformed = (
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>Cassé & mal formé</title>'
            f"<item><title>Premier</title><link>{pages[0]}</link><pubDate>Mon, 10 Feb 25 08:00:00 +0009</pubDate>"
            f"</item><item><title>Second</title><link>{pages[1]}</link><pubDate>32/13/2025 99:99</pubDate>"
            f"</item><item><title>Troisième sans date</title><link>{pages[2]}</link></item>"
            f"<item><title>Sans lien</title></item>"
        )  # never closed
        url = server.add("/feed.xml", malformed, "application/rss+xml")
        database_url = f"sqlite:///{tmp_path}/odd.db"
        report = cycle(database_url, write_feeds(tmp_path / "feeds.yaml", {"odd": url}))
    assert report.feeds_ok == 1 and report.articles_added == 3
    feed = query(database_url, "SELECT last_error FROM feeds")[0]
    assert "malformed feed, items used anyway" in feed["last_error"]
    items = {
        r["title"]: r for r in query(database_url, "SELECT title, state, published_at, last_error FROM feed_items")
    }
    assert items["Sans lien"]["state"] == "failed" and "no link" in items["Sans lien"]["last_error"]
    assert str(items["Premier"]["published_at"]).startswith("2025-02-10")
    assert items["Second"]["published_at"] is None and items["Troisième sans date"]["state"] == "done"
    published = [r["published_at"] for r in query(database_url, "SELECT published_at FROM articles")]
    assert all(p is not None for p in published)  # page date or fetch time stands in


def test_conditional_get_304_and_stale_validators(tmp_path: Path) -> None:
    with LoopbackServer("127.0.0.24") as server:
        feed = good_site(server)
        body = server.routes["/good.xml"][2]  # type: ignore[index]

        def validating(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
            if handler.headers.get("If-None-Match") == '"v1"':
                return 304, {"ETag": '"v1"'}, b""
            return 200, {"Content-Type": "application/rss+xml", "ETag": '"v1"'}, body

        server.routes["/good.xml"] = validating
        server.add("/stale.xml", body, "application/rss+xml", headers={"ETag": '"always-new"'})
        database_url = f"sqlite:///{tmp_path}/cond.db"
        feeds_file = write_feeds(tmp_path / "feeds.yaml", {"validating": feed, "stale": server.base + "/stale.xml"})
        first = cycle(database_url, feeds_file)
        second = cycle(database_url, feeds_file)
    assert (first.items_new, second.items_new, second.feeds_ok) == (2, 0, 2)
    feed_requests = [headers for path, headers in server.requests if path == "/good.xml"]
    assert "If-None-Match" not in feed_requests[0] and feed_requests[1]["If-None-Match"] == '"v1"'
    stale_requests = [headers for path, headers in server.requests if path == "/stale.xml"]
    assert stale_requests[1]["If-None-Match"] == '"always-new"'  # sent, ignored by the server...
    state = {r["name"]: r for r in query(database_url, "SELECT name, body_hash, last_success_at FROM feeds")}
    assert state["stale"]["body_hash"] and all(r["last_success_at"] for r in state.values())
    assert len([p for p, _ in server.requests if p.startswith("/article-")]) == 1  # ...and the page is fetched once


def test_5xx_burst_backs_off_then_recovers(tmp_path: Path) -> None:
    answers = [503, 500, 200]
    with LoopbackServer("127.0.0.25") as server:
        url = good_site(server)
        ok = server.routes["/good.xml"]

        def flaky(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
            status = answers.pop(0)
            return ok if status == 200 else (status, {"Content-Type": "text/plain"}, b"oops")  # type: ignore[return-value]

        server.routes["/good.xml"] = flaky
        database_url = f"sqlite:///{tmp_path}/flaky.db"
        feeds_file = write_feeds(tmp_path / "feeds.yaml", {"flaky": url})
        failures = []
        for _ in range(3):
            cycle(database_url, feeds_file)
            failures.append(query(database_url, "SELECT consecutive_failures, next_fetch_at FROM feeds")[0])
    assert [f["consecutive_failures"] for f in failures] == [1, 2, 0]
    assert len(query(database_url, "SELECT id FROM articles")) == 1


def test_windows_1252_page_with_wrong_charset_keeps_accents(tmp_path: Path) -> None:
    seed = seeds()[1]
    with LoopbackServer("127.0.0.26") as server:
        page = article_page(
            title=seed.title,
            body=seed.body,
            site="Vieux site",
            url=server.base + "/v.html",
            published=seed.published,
            charset="utf-8",
        )  # the page claims UTF-8...
        server.add("/v.html", page.encode("windows-1252", errors="replace"), "text/html; charset=utf-8")  # ...wrongly
        item = {"title": seed.title, "link": server.base + "/v.html", "published": datetime.now(UTC)}
        url = server.add(
            "/feed.xml",
            rss("Vieux", server.base, [item]).encode("windows-1252", errors="replace"),
            "application/rss+xml",
        )
        database_url = f"sqlite:///{tmp_path}/charset.db"
        cycle(database_url, write_feeds(tmp_path / "feeds.yaml", {"vieux": url}))
    article = query(database_url, "SELECT text FROM articles")[0]
    assert "États-Unis" in article["text"] and "stratégique" in article["text"] and "\ufffd" not in article["text"]


def test_robots_txt_is_obeyed_for_pages_unless_the_feed_says_not(tmp_path: Path) -> None:
    with LoopbackServer("127.0.0.27") as server:
        url = good_site(server)
        server.add("/robots.txt", "User-agent: *\nDisallow: /article-", "text/plain")
        database_url = f"sqlite:///{tmp_path}/robots.db"
        cycle(database_url, write_feeds(tmp_path / "feeds.yaml", {"polite": url}))
        item = query(database_url, "SELECT state, last_error FROM feed_items")[0]
        assert item["state"] == "failed" and "robots.txt" in item["last_error"]
        assert not [p for p, _ in server.requests if p.startswith("/article-")]
        other = f"sqlite:///{tmp_path}/robots-off.db"
        cycle(other, write_feeds(tmp_path / "feeds2.yaml", {"rude": url}, extra=", robots: false"))
    assert len(query(other, "SELECT id FROM articles")) == 1


def test_one_politeness_budget_per_host(tmp_path: Path) -> None:
    """Feed and page requests to one host share the budget: at most 2 at once, starts spaced by 0.2 s."""
    with LoopbackServer("127.0.0.28") as server:
        items = []
        for i, seed in enumerate(seeds() * 2):
            path = f"/p{i}.html"

            def slow(
                handler: BaseHTTPRequestHandler,
                page: str = article_page(
                    title=f"{seed.title} {i}",
                    body=seed.body,
                    site="S",
                    url=server.base + path,
                    published=seed.published,
                ),
            ) -> tuple[int, dict[str, str], bytes]:
                time.sleep(0.5)
                return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()

            server.routes[path] = slow
            items.append({"title": f"{seed.title} {i}", "link": server.base + path, "published": datetime.now(UTC)})
        urls = {
            f"f{k}": server.add(f"/f{k}.xml", rss("F", server.base, items[k::2]), "application/rss+xml")
            for k in range(2)
        }
        database_url = f"sqlite:///{tmp_path}/budget.db"
        report = cycle(
            database_url,
            write_feeds(tmp_path / "feeds.yaml", urls),
            host_min_interval=0.2,
            host_concurrency=2,
            request_deadline=10.0,
        )
    assert report.articles_added == 10
    assert server.max_active == 2  # concurrency happened, and stayed capped
    gaps = [b - a for a, b in zip(server.starts, server.starts[1:], strict=False)]
    assert len(server.starts) == 1 + 2 + 10  # robots.txt, 2 feeds, 10 pages
    # Starts are seen by the server, whose threads busy cores may delay: a late start shortens the gap
    # before the next one, never the span of all of them. Without the budget, two would start at once.
    assert min(gaps) >= 0.1, gaps
    assert server.starts[-1] - server.starts[0] >= 12 * 0.2 - 0.05, gaps


@pytest.mark.slow
def test_real_section_feeds_with_overlap_store_each_article_once(tmp_path: Path) -> None:
    """The 24 captured Le Figaro / Libération section feeds, their links pointed at loopback outlets."""
    import json
    import re

    from benchmarks.corpus import FEEDS_FR, RPM2

    texts = [json.loads(line)["text"] for line in RPM2.read_text(encoding="utf-8").splitlines() if line.strip()]
    origins = [
        "https://www.lefigaro.fr",
        "https://madame.lefigaro.fr",
        "https://golf.lefigaro.fr",
        "https://bourse.lefigaro.fr",
        "https://www.liberation.fr",
    ]
    with (
        LoopbackServer("127.0.0.31") as feeds_host,
        LoopbackServer("127.0.0.32") as a,
        LoopbackServer("127.0.0.33") as b,
        LoopbackServer("127.0.0.34") as c,
        LoopbackServer("127.0.0.35") as d,
        LoopbackServer("127.0.0.36") as e,
    ):
        outlets = dict(zip(origins, [a, b, c, d, e], strict=True))
        feeds: dict[str, str] = {}
        item_links: list[str] = []
        for path in sorted(FEEDS_FR.glob("*.xml")):
            xml = path.read_text(encoding="utf-8")
            for origin, server in outlets.items():
                xml = xml.replace(origin, server.base).replace(origin.replace("https", "http"), server.base)
            for item in re.findall(r"<item>.*?</item>", xml, re.S):
                link = re.search(r"<link>(.*?)</link>", item, re.S)
                if link:
                    item_links.append(link.group(1).strip())
            feeds[path.stem] = feeds_host.add(f"/{path.name}", xml, "application/rss+xml; charset=utf-8")
        unique = sorted(set(item_links))
        for n, link in enumerate(unique):
            server = next(s for s in outlets.values() if link.startswith(s.base))
            server.add(
                link[len(server.base) :].split("?")[0],
                article_page(
                    title=f"Article {n}",
                    body=f"Article numéro {n}.\n" + texts[n % len(texts)],
                    site=server.host,
                    url=link,
                    published="2025-02-10",
                ),
            )
        database_url = f"sqlite:///{tmp_path}/sections.db"
        report = cycle(
            database_url,
            write_feeds(tmp_path / "feeds.yaml", feeds),
            host_concurrency=4,
            request_deadline=20.0,
            read_timeout=10.0,
        )
        page_requests = [p for s in outlets.values() for p, _ in s.requests if p != "/robots.txt"]
    assert report.feeds_ok == 24 and report.feeds_failed == 0
    assert len(item_links) > len(unique) > 300  # section feeds overlap
    assert len(query(database_url, "SELECT id FROM articles")) == len(unique)
    assert len(page_requests) == len(unique)  # every page fetched once, however many feeds list it
    states = query(database_url, "SELECT state, COUNT(*) AS n FROM feed_items GROUP BY state")
    assert {r["state"]: r["n"] for r in states} == {"done": report.items_new}


@pytest.mark.slow
def test_sigkill_mid_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    pages_per_host = 20
    with LoopbackServer("127.0.0.41") as one, LoopbackServer("127.0.0.42") as two:
        feeds = {}
        for server in (one, two):
            items = []
            for i in range(pages_per_host):
                seed = seeds()[i % 5]
                path = f"/a{i}.html"
                page = article_page(
                    title=f"{seed.title} ({server.host} {i})",
                    body=f"Dépêche {i}.\n{seed.body}",
                    site=server.host,
                    url=server.base + path,
                    published=seed.published,
                )

                def slow(handler: BaseHTTPRequestHandler, page: str = page) -> tuple[int, dict[str, str], bytes]:
                    time.sleep(0.15)
                    return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()

                server.routes[path] = slow
                items.append({"title": f"Dépêche {i}", "link": server.base + path, "published": datetime.now(UTC)})
            feeds[server.host] = server.add("/feed.xml", rss(server.host, server.base, items), "application/rss+xml")
        database_url = f"sqlite:///{tmp_path}/crash.db"
        env = {
            **os.environ,
            "MONITOR_DATABASE_URL": database_url,
            "MONITOR_FEEDS_FILE": str(write_feeds(tmp_path / "feeds.yaml", feeds)),
            "MONITOR_ALLOW_PRIVATE_ADDRESSES": "127.0.0.0/8",
            "MONITOR_HOST_MIN_INTERVAL": "0",
            "MONITOR_HOST_CONCURRENCY": "1",
            "MONITOR_POLL_SECONDS": "1",
        }
        daemon = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        stored = 0
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline and stored < 6:
                time.sleep(0.1)
                try:
                    stored = len(query(database_url, "SELECT id FROM articles"))
                except Exception:
                    stored = 0
        finally:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)
        assert 6 <= stored < 2 * pages_per_host, stored  # killed in the middle of the run
        seen = len(query(database_url, "SELECT id FROM feed_items"))
        assert seen == 2 * pages_per_host  # every item was recorded before its page was fetched
        restart = subprocess.run(
            [sys.executable, "-m", "monitor", "run", "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert restart.returncode == 0, restart.stderr
    urls = [r["url"] for r in query(database_url, "SELECT url FROM articles")]
    assert len(urls) == len(set(urls)) == 2 * pages_per_host
    items = query(database_url, "SELECT state, article_id FROM feed_items")
    assert len(items) == 2 * pages_per_host and all(i["state"] == "done" and i["article_id"] for i in items)


def test_an_overlong_item_link_is_refused_with_its_reason(tmp_path: Path, postgres_url: str) -> None:
    """One item's link is 3,000 characters: the feed's other items are stored, the feed is not backed off but
    says `invalid` and why, and the item is recorded failed with the reason (PostgreSQL would refuse the row
    if the link were stored whole)."""
    with LoopbackServer("127.0.0.31") as server:
        good_site(server)  # serves /article-000.html
        long_link = f"{server.base}/p?" + "q=" + "a" * 3000
        items = [
            {"title": "Normal", "link": server.base + "/article-000.html", "published": datetime.now(UTC)},
            {"title": "Trop long", "link": long_link, "published": datetime.now(UTC)},
        ]
        feed = server.add("/mixed.xml", rss("Mixte", server.base, items), "application/rss+xml")
        report = cycle(postgres_url, write_feeds(tmp_path / "feeds.yaml", {"mixte": feed}))
    assert report.feeds_ok == 1 and report.articles_added == 1
    (row,) = query(postgres_url, "SELECT consecutive_failures, last_error, last_error_kind FROM feeds")
    assert row["consecutive_failures"] == 0 and row["last_error_kind"] == "invalid"
    assert "1 item(s) refused" in row["last_error"] and "longer than 2048 characters" in row["last_error"]
    items = query(postgres_url, "SELECT state, last_error FROM feed_items ORDER BY id")
    assert [i["state"] for i in items] == ["done", "failed"]
    assert "longer than 2048 characters" in items[1]["last_error"]
