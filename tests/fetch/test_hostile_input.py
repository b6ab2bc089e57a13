"""Hostile or malformed input at a boundary stays with the item or feed it came with, recorded with a reason.

Real loopback HTTP servers, real SQLite and PostgreSQL, the real `monitor` command where its exit code matters.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from benchmarks.corpus import LoopbackServer, article_page, rss, seeds
from monitor.config import Settings
from monitor.fetch.client import Fetcher
from monitor.fetch.urls import RefusedURL, canonical_link_refusal, canonical_url
from monitor.pipeline.prepare import Incoming, Prepared, prepare
from monitor.storage import Storage
from tests.support import FAST, cycle, loopback_env, query, run_cli, write_feeds


def _page(
    server: LoopbackServer, seed_index: int, path: str, *, canonical: str | None = None, site: str = "Site"
) -> str:
    seed = seeds()[seed_index]
    url = server.base + path
    page = article_page(title=seed.title, body=seed.body, site=site, url=canonical or url, published=seed.published)
    return server.add(path, page)


def _slow_to_extract(paragraphs: int) -> str:
    """A page of many small linked blocks: trafilatura takes about 0.3 s for 600 of them, seconds for 6,000."""
    blocks = "".join(
        f'<div class="c{i}"><p>Paragraphe numéro {i} avec quelques mots de texte français pour remplir la page. '
        f'<a href="/x{i}">lien {i}</a></p></div>'
        for i in range(paragraphs)
    )
    return f"<html><body><article>{blocks}</article></body></html>"


def _item(title: str, link: str, guid: str | None = None) -> str:
    return (
        f"<item><title>{html.escape(title)}</title><link>{html.escape(link)}</link>"
        f'<guid isPermaLink="false">{html.escape(guid or link)}</guid>'
        f"<pubDate>{datetime.now(UTC):%a, %d %b %Y %H:%M:%S +0000}</pubDate></item>"
    )


def _feed(*items: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Flux</title>'
        f"<link>http://example.invalid/</link><description>test</description>{''.join(items)}</channel></rss>"
    )


def test_canonical_url_never_raises_and_keeps_ipv6_brackets() -> None:
    assert canonical_url("http://[::1]:8080/x?utm_source=a") == "http://[::1]:8080/x"
    assert canonical_url("HTTP://[2001:DB8::1]/a") == "http://[2001:db8::1]/a"
    for bad, reason in [
        ("http://host:99999/a.html", "Port out of range"),
        ("http://[::1/x", "Invalid IPv6 URL"),
        ("javascript:alert(1)", "not http(s)"),
        ("http:///nohost", "no host"),
        ("http://a b.fr/x", "characters no host name has"),
        ("http://x.fr/" + "a" * 3000, "longer than 2048"),
        ("http://x.fr/a\x00b.html", "control character '\\x00'"),
        ("http://x.fr/a\tb.html", "control character '\\t'"),  # urlsplit would quietly drop it
        ("\x01http://x.fr/a.html", "control character"),
        ("http://x.fr/a.html#\x7f", "control character"),
        ("http://[v1.fe]/", "IPvFuture address [v1.fe]"),
        ("http://u@[v1.fe]:8080/", "IPvFuture address [v1.fe]"),
    ]:
        refused = canonical_url(bad)
        assert isinstance(refused, RefusedURL), bad
        assert reason in refused.reason, (bad, refused.reason)


def test_canonical_links_are_evidence_not_orders() -> None:
    page = "https://www.numerama.com/tech/123-un-article.html"
    assert canonical_link_refusal("https://www.numerama.com/", page) is not None
    assert canonical_link_refusal("https://www.numerama.com/tech/", page) is not None  # its own section
    assert canonical_link_refusal("https://www.numerama.com/tag/apple/", page) is not None
    assert canonical_link_refusal("https://www.frandroid.com/x/123-un-article.html", page) is not None
    assert canonical_link_refusal("https://numerama.com/tech/123-un-article.html", page + "?amp=1") is None
    assert canonical_link_refusal("https://amp.numerama.com/tech/123-un-article.html", page) is None  # same site


def _redirect_to(location: str) -> Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]:
    def reply(_handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        return 302, {"Location": location}, b""

    return reply


def test_a_hostile_feed_next_to_good_ones(tmp_path: Path, database_url: str) -> None:
    """Every bad link of the issue in one feed, beside good feeds: the good articles are all stored, each bad
    item fails with its reason, `run --once` exits 0 and no traceback reaches the log."""
    with LoopbackServer("127.0.0.41") as hostile, LoopbackServer("127.0.0.42") as good:
        base = hostile.base
        first = _page(hostile, 0, "/a/000.html")
        long_title = _page(hostile, 1, "/a/001.html")
        nul = hostile.add(
            "/a/nul.html",
            article_page(
                title="Octet nul",
                body=seeds()[3].body.replace(". ", ".\x00 ", 3),
                site="S",
                url=base + "/a/nul.html",
                published=seeds()[3].published,
            ).encode("utf-8"),
        )
        hostile.add("/a/redirect.html", b"")
        hostile.routes["/a/redirect.html"] = _redirect_to("http://127.0.0.41:99999/elsewhere.html")
        items = [
            _item("Bon", first),
            _item("Port impossible", "http://127.0.0.41:99999/a.html"),
            _item("IPv6 cassé", "http://[::1/x"),
            _item("IPv6", f"http://[::1]:{hostile.port}/x.html"),
            _item("Redirection vers un port impossible", base + "/a/redirect.html"),
            _item("Script", "javascript:alert(1)"),
            _item("Titre " + "très " * 2000, long_title),
            _item("Octet nul", nul),
        ]
        hostile_feed = hostile.add("/hostile.xml", _feed(*items), "application/rss+xml")
        good_feed = good.add(
            "/feed.xml",
            rss(
                "Bon",
                good.base,
                [{"title": "x", "link": _page(good, 2, "/b/002.html"), "published": datetime.now(UTC)}],
            ),
            "application/rss+xml",
        )
        feeds = write_feeds(tmp_path / "feeds.yaml", {"hostile": hostile_feed, "good": good_feed})
        done = run_cli("run", "--once", env=loopback_env(database_url, feeds, host_min_interval="0"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert "4 articles added" in done.stdout, done.stdout
    articles = query(database_url, "SELECT url, title FROM articles ORDER BY url")
    assert sorted(a["url"] for a in articles) == sorted([first, long_title, nul, good.base + "/b/002.html"])
    assert max(len(a["title"]) for a in articles) <= 1000
    failed = {
        row["url"]: row["last_error"]
        for row in query(database_url, "SELECT url, last_error FROM feed_items WHERE state = 'failed'")
    }
    assert "Port out of range" in failed["http://127.0.0.41:99999/a.html"]
    assert "Invalid IPv6 URL" in failed["http://[::1/x"]
    assert "non-public address ::1" in failed[f"http://[::1]:{hostile.port}/x.html"]  # refused before connecting
    assert "redirect to an invalid URL" in failed[base + "/a/redirect.html"]
    assert "not http(s)" in failed["javascript:alert(1)"]
    assert len(failed) == 5
    (feed,) = query(
        database_url, "SELECT last_error_kind, last_error, consecutive_failures FROM feeds WHERE name = 'hostile'"
    )
    assert feed["last_error_kind"] == "invalid" and feed["consecutive_failures"] == 0
    assert "3 item(s) refused" in feed["last_error"]  # the three refused while reading the feed


RETRY_AFTERS = [
    "9999999999999999999999999",  # more seconds than a timedelta holds
    "²",  # a digit to str.isdigit, not to float()
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Tue, 01 Jan 99999999999999999999 00:00:00 GMT",
    "Mon, 01 Jan 2024 00:00:00 +99999999999999999999",
    "Mon, 32 Dec 2024 00:00:00 GMT",
]


def test_a_server_asking_to_wait_forever_postpones_only_its_feed(tmp_path: Path, database_url: str) -> None:
    """503s whose Retry-After no timedelta can hold, or that is no date at all: each postpones its own feed by
    a day at most, and `run --once` exits 0 with the good feed's article stored."""
    with LoopbackServer("127.0.0.52") as busy, LoopbackServer("127.0.0.53") as good:
        feeds = {
            f"busy {n}": busy.add(f"/{n}.xml", b"busy", "text/plain", status=503, headers={"Retry-After": value})
            for n, value in enumerate(RETRY_AFTERS)
        }
        link = _page(good, 0, "/a/000.html")
        entries = [{"title": "t", "link": link, "published": datetime.now(UTC)}]
        feeds["good"] = good.add("/feed.xml", rss("Bon", good.base, entries), "application/rss+xml")
        env = loopback_env(database_url, write_feeds(tmp_path / "feeds.yaml", feeds), host_min_interval="0")
        done = run_cli("run", "--once", env=env)
    assert done.returncode == 0, done.stderr
    assert "1 article added" in done.stdout, done.stdout
    rows = query(database_url, "SELECT name, next_fetch_at, next_fetch_delay_s, last_error FROM feeds")
    busy_rows = [row for row in rows if row["name"].startswith("busy")]
    assert len(busy_rows) == len(RETRY_AFTERS)
    for row in busy_rows:
        assert "HTTP 503" in row["last_error"] and row["next_fetch_delay_s"] <= 86400, row


def test_nul_and_control_characters_in_a_feed_stay_with_their_item(tmp_path: Path, database_url: str) -> None:
    """`&#0;` in an item's link refuses that item with the reason; in a title or a GUID it is taken out. Beside
    them every article is stored, on PostgreSQL too, whose text columns cannot hold NUL."""
    with LoopbackServer("127.0.0.54") as server, LoopbackServer("127.0.0.55") as good:
        nul_link = f"{server.base}/a/x&#0;y.html"
        tab_link = f"{server.base}/a/x&#9;y.html"  # urlsplit would quietly drop it
        page = _page(server, 0, "/a/000.html")
        when = f"{datetime.now(UTC):%a, %d %b %Y %H:%M:%S +0000}"
        items = [
            f"<item><title>Lien &#0; nul</title><link>{nul_link}</link><pubDate>{when}</pubDate></item>",
            f"<item><title>Lien tab</title><link>{tab_link}</link><pubDate>{when}</pubDate></item>",
            f'<item><title>Titre&#0;nul&#1;</title><link>{page}</link><guid isPermaLink="false">g&#0;1</guid>'
            f"<author>a&#0;b@example.fr (A&#0;B)</author><pubDate>{when}</pubDate></item>",
        ]
        hostile = server.add("/feed.xml", _feed(*items), "application/rss+xml")
        link = _page(good, 2, "/b/002.html")
        entries = [{"title": "t", "link": link, "published": datetime.now(UTC)}]
        feeds = {"nul": hostile, "good": good.add("/feed.xml", rss("Bon", good.base, entries), "application/rss+xml")}
        env = loopback_env(database_url, write_feeds(tmp_path / "feeds.yaml", feeds), host_min_interval="0")
        done = run_cli("run", "--once", env=env)
    assert done.returncode == 0, done.stderr
    assert "2 articles added" in done.stdout, done.stdout
    titles = {row["url"]: row["title"] for row in query(database_url, "SELECT url, title FROM articles")}
    assert titles == {page: "Titrenul", link: "t"}
    rows = query(database_url, "SELECT guid, url, title, state, last_error FROM feed_items ORDER BY id")
    rows = [row for row in rows if row["url"].startswith(server.base)]
    assert [(row["state"], row["title"]) for row in rows] == [
        ("failed", "Lien  nul"),
        ("failed", "Lien tab"),
        ("done", "Titrenul"),
    ]
    assert rows[0]["url"] == f"{server.base}/a/x%00y.html" and rows[1]["url"] == f"{server.base}/a/x%09y.html"
    assert "control character" in rows[0]["last_error"] and "control character" in rows[1]["last_error"]
    assert rows[2]["guid"] == "g1"


def test_nul_in_an_imported_line_stays_out_of_the_database(tmp_path: Path, database_url: str) -> None:
    """JSON spells NUL as \\u0000: in a URL the line is skipped with the reason; in a title, a text or a source
    it is taken out, and the article stored, on PostgreSQL too."""
    first, second = seeds()[0], seeds()[2]
    lines = [
        {"url": "https://a.example.fr/x\x00y", "text": first.body, "published_at": "2024-11-05T10:00:00+01:00"},
        {
            "url": "https://a.example.fr/ok",
            "title": "Ti\x00tre",
            "text": second.body.replace(". ", ".\x00 ", 2),
            "source": "Sour\x00ce",
            "published_at": "2024-11-05T10:00:00+01:00",
        },
    ]
    archive = tmp_path / "nul.jsonl"
    archive.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    env = loopback_env(database_url, write_feeds(tmp_path / "feeds.yaml", {}))
    result = run_cli("import", str(archive), env=env)
    assert result.returncode == 0 and "1 article added, 0 already known, 1 line skipped" in result.stdout, result
    assert f"{archive}:line 1: " in result.stderr and "control character" in result.stderr
    (row,) = query(database_url, "SELECT url, title, source, text FROM articles")
    assert (row["url"], row["title"], row["source"]) == ("https://a.example.fr/ok", "Titre", "Source")
    assert "\x00" not in row["text"]


def test_an_error_recording_a_feed_stays_with_that_feed(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed's boundary covers recording what it said, not only fetching it: a bug while storing one
    feed's items (a stand-in: record_items raises for it) is that feed's failure, recorded with the reason
    and its lease handed back, and the other feed's articles are stored."""
    from monitor.storage.queue import FeedQueue

    real = FeedQueue.record_items

    def poisoned(self: FeedQueue, feed_id: int, items: Any, now: datetime) -> int:
        if self.feed(feed_id).name == "broken":
            raise KeyError("a bug")
        return real(self, feed_id, items, now)

    monkeypatch.setattr(FeedQueue, "record_items", poisoned)
    with LoopbackServer("127.0.0.44") as server:
        feeds = {}
        for name, seed in (("good", 0), ("broken", 4)):
            link = _page(server, seed, f"/{name}/a.html")
            feeds[name] = server.add(
                f"/{name}.xml",
                rss(name, server.base, [{"title": name, "link": link, "published": datetime.now(UTC)}]),
                "application/rss+xml",
            )
        report = cycle(database_url, write_feeds(tmp_path / "feeds.yaml", feeds))
    assert (report.feeds_ok, report.feeds_failed, report.articles_added) == (1, 1, 1)
    rows = {
        r["name"]: r for r in query(database_url, "SELECT name, last_error_kind, last_error, lease_until FROM feeds")
    }
    assert rows["broken"]["last_error_kind"] == "internal" and "KeyError" in rows["broken"]["last_error"]
    assert rows["broken"]["lease_until"] is None and rows["good"]["last_error"] is None
    assert [r["url"] for r in query(database_url, "SELECT url FROM articles")] == [f"{server.base}/good/a.html"]


def test_an_unexpected_error_stays_with_its_item_and_stops_after_the_last_attempt(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that no input class foresaw (a stand-in for one: preparing one URL raises ZeroDivisionError)
    costs that item an attempt, never the cycle: the other articles are stored, and after
    MONITOR_ITEM_MAX_ATTEMPTS the item is failed with the reason."""
    real = prepare

    def poisoned(incoming: Incoming, params: object) -> Prepared:
        if "poison" in incoming.url:
            raise ZeroDivisionError("division by zero")
        return real(incoming, params)  # type: ignore[arg-type]

    monkeypatch.setattr("monitor.daemon.extractor.prepare", poisoned)
    with LoopbackServer("127.0.0.43") as server:
        links = [_page(server, 0, "/a/000.html"), _page(server, 4, "/a/poison.html"), _page(server, 2, "/a/002.html")]
        feed = server.add(
            "/feed.xml",
            rss(
                "F",
                server.base,
                [{"title": f"t{i}", "link": u, "published": datetime.now(UTC)} for i, u in enumerate(links)],
            ),
            "application/rss+xml",
        )
        feeds = write_feeds(tmp_path / "feeds.yaml", {"f": feed})
        report = cycle(database_url, feeds, item_max_attempts=2)
        assert report.articles_added == 2 and report.items_failed == 0
        (item,) = query(database_url, "SELECT state, attempts, last_error FROM feed_items WHERE url LIKE '%poison%'")
        assert item["state"] == "pending" and item["attempts"] == 1
        assert "internal: ZeroDivisionError: division by zero" in item["last_error"]
        storage = Storage(database_url)
        with storage.engine.begin() as db:  # its backoff over
            db.exec_driver_sql("UPDATE feed_items SET next_attempt_at = seen_at")
        storage.engine.dispose()
        report = cycle(database_url, feeds, item_max_attempts=2)
    assert report.items_failed == 1 and "ZeroDivisionError" in report.errors[0]
    (item,) = query(database_url, "SELECT state, attempts FROM feed_items WHERE url LIKE '%poison%'")
    assert item["state"] == "failed" and item["attempts"] == 2


def test_an_item_given_up_at_claim_time_is_logged_with_its_feed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An item whose last attempt never finished (its worker was killed) is given up when next claimed; the
    log line names its feed, as every other item failure's does."""
    from monitor.config import FeedConfig
    from monitor.fetch.feeds import FeedEntry

    database = f"sqlite:///{tmp_path}/m.db"
    with LoopbackServer("127.0.0.56") as server:
        link = _page(server, 0, "/a/000.html")
        feed = server.add("/feed.xml", _feed(_item("A", link)), "application/rss+xml")
        storage = Storage(database)
        storage.ensure_schema(upgrade=True)
        with storage.repository() as repo:
            repo.sync_feeds([FeedConfig("Flux tué", feed, 900)])
            repo.record_items(repo.feeds()[0].id, [FeedEntry(link, link, "A", None)], datetime.now(UTC))
        with storage.engine.begin() as db:  # both attempts started, the last one never settled
            db.exec_driver_sql("UPDATE feed_items SET attempts = 2, last_error = 'worker killed'")
        storage.engine.dispose()
        with caplog.at_level("WARNING", logger="monitor.daemon.worker"):
            report = cycle(database, write_feeds(tmp_path / "feeds.yaml", {"Flux tué": feed}), item_max_attempts=2)
    assert report.items_failed == 1 and report.articles_added == 0
    (line,) = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert line.startswith(f"feed Flux tué: item {link}: gave up after 2 attempts"), line


def test_a_feed_body_naming_a_local_file_is_not_read(tmp_path: Path) -> None:
    """feedparser opens a path or URL it is given as a string; the body reaches it as a stream, so a server
    cannot make the monitor read a local file, nor hang it on a device."""
    local = tmp_path / "local-feed.xml"
    local.write_text(
        rss(
            "Local",
            "http://local.invalid/",
            [{"title": "Secret local", "link": "http://127.0.0.44/secret.html", "published": datetime.now(UTC)}],
        ),
        encoding="utf-8",
    )
    database = f"sqlite:///{tmp_path}/m.db"
    with LoopbackServer("127.0.0.44") as server:
        feeds = {
            "path": server.add("/path.xml", str(local).encode(), "application/rss+xml"),
            "zero": server.add("/zero.xml", b"/dev/zero", "application/rss+xml"),
            "stdin": server.add("/stdin.xml", b"/dev/stdin", "application/rss+xml"),
        }
        started = time.monotonic()
        report = cycle(database, write_feeds(tmp_path / "feeds.yaml", feeds))
    assert time.monotonic() - started < 60
    assert report.feeds_failed == 3 and report.items_new == 0
    assert query(database, "SELECT id FROM feed_items") == []
    assert {row["last_error_kind"] for row in query(database, "SELECT last_error_kind FROM feeds")} == {"parse"}


def test_canonical_links_are_taken_only_as_evidence(tmp_path: Path, database_url: str) -> None:
    """Two pages whose canonical link is the home page, and one declaring another article's URL, all keep
    their own URL with the reason; an AMP copy declaring a stored article with the same text is that
    article; a page that differs from its canonical link only in its query string takes it."""
    with LoopbackServer("127.0.0.45") as server:
        home, b = server.base + "/", server.base
        links = [
            _page(server, 0, "/a/000.html", canonical=home),
            _page(server, 4, "/a/004.html", canonical=home),
            _page(server, 1, "/a/001.html"),
            _page(server, 2, "/a/002.html", canonical=b + "/a/001.html"),  # another article's URL, another text
            _page(server, 3, "/a/003.html?from=rss", canonical=b + "/a/003.html"),
        ]
        amp = _page(server, 1, "/amp/001.html", canonical=b + "/a/001.html")

        def feed(urls: list[str]) -> str:
            entries = [{"title": f"t{i}", "link": u, "published": datetime.now(UTC)} for i, u in enumerate(urls)]
            return server.add("/feed.xml", rss("F", b, entries), "application/rss+xml")

        feeds = write_feeds(tmp_path / "feeds.yaml", {"f": feed(links)})
        cycle(database_url, feeds)
        feed([*links, amp])  # the AMP copy comes once 001 is stored
        cycle(database_url, feeds)
    rows = {r["url"]: r["canonical_note"] for r in query(database_url, "SELECT url, canonical_note FROM articles")}
    assert set(rows) == {*links[:4], b + "/a/003.html"}
    assert "home page" in rows[links[0]] and "home page" in rows[links[1]]
    assert rows[links[3]] and links[2] in rows[links[3]]  # not filed under 001's URL
    assert rows[links[2]] is None and rows[b + "/a/003.html"] is None
    (item,) = query(database_url, "SELECT state, article_id FROM feed_items WHERE url LIKE '%/amp/%'")
    (original,) = query(database_url, "SELECT article_id FROM feed_items WHERE url LIKE '%/a/001.html'")
    assert item["state"] == "done" and item["article_id"] == original["article_id"]


def test_guid_collisions_keep_every_link(tmp_path: Path, database_url: str) -> None:
    with LoopbackServer("127.0.0.46") as server:
        a, b, c = (_page(server, i, f"/a/{i}.html") for i in (0, 2, 4))
        feed = server.add(
            "/feed.xml", _feed(_item("A", a, "same-guid"), _item("B", b, "same-guid")), "application/rss+xml"
        )
        feeds = write_feeds(tmp_path / "feeds.yaml", {"f": feed})
        first = cycle(database_url, feeds)
        assert first.items_new == 2 and first.articles_added == 2
        server.add(
            "/feed.xml",
            _feed(_item("C", c, "same-guid"), _item("B", b, "same-guid"), _item("A", a, "same-guid")),
            "application/rss+xml",
        )
        second = cycle(database_url, feeds)
        assert second.items_new == 1 and second.articles_added == 1
        third = cycle(database_url, feeds)  # the same body again, reordered and with nothing new
        assert third.items_new == 0
    assert len(query(database_url, "SELECT id FROM articles")) == 3


def test_outlet_comes_from_configuration(tmp_path: Path, database_url: str) -> None:
    with LoopbackServer("127.0.0.47") as server:
        feeds = {}
        for i, name in enumerate(["Numerama Tech", "Numerama Science", "Frandroid"]):
            link = _page(server, i, f"/{i}.html", site="Titre de page en guise de site")
            feeds[name] = server.add(
                f"/{i}.xml",
                rss(name, server.base, [{"title": "t", "link": link, "published": datetime.now(UTC)}]),
                "application/rss+xml",
            )
        lines = ["feeds:"]
        for name, url in feeds.items():
            outlet = ", outlet: Numerama" if name.startswith("Numerama") else ""
            lines.append(f'  - {{name: "{name}", url: "{url}"{outlet}}}')
        (tmp_path / "feeds.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        cycle(database_url, tmp_path / "feeds.yaml")
    rows = query(database_url, "SELECT source, site_name FROM articles ORDER BY url")
    assert [r["source"] for r in rows] == ["Numerama", "Numerama", "Frandroid"]
    assert {r["site_name"] for r in rows} == {"Titre de page en guise de site"}
    assert {r["outlet"] for r in query(database_url, "SELECT outlet FROM feeds")} == {"Numerama", "Frandroid"}


def test_a_taken_over_lease_cannot_be_settled_by_its_old_holder(database_url: str) -> None:
    """Worker A's lease on an item runs out (it stalled); B takes the item over and stores it. A, waking
    up, can neither mark it done nor failed: B's result stands. A live worker's renewal keeps its lease."""
    from monitor.config import FeedConfig
    from monitor.fetch.feeds import FeedEntry

    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    now = datetime.now(UTC)
    with storage.repository() as repo:
        repo.sync_feeds([FeedConfig("f", "http://127.0.0.48/feed.xml", 900)])
        feed_id = repo.feeds()[0].id
        repo.record_items(feed_id, [FeedEntry("g1", "http://127.0.0.48/a.html", "A", now)], now)
    lease = timedelta(seconds=60)
    with storage.repository() as repo:
        (item,), _ = repo.claim_pending_items(now, lease, "worker-a", limit=10, max_attempts=5)
        item_id = item.id
    with storage.repository() as repo:  # still A's: B gets nothing
        assert (
            repo.claim_pending_items(now + timedelta(seconds=30), lease, "worker-b", limit=10, max_attempts=5)[0] == []
        )
        repo.renew_leases("worker-a", now + timedelta(seconds=90))
    with storage.repository() as repo:  # renewed: B still gets nothing after the first lease would have ended
        assert (
            repo.claim_pending_items(now + timedelta(seconds=70), lease, "worker-b", limit=10, max_attempts=5)[0] == []
        )
    with storage.repository() as repo:  # A stalled past its renewed lease: B takes over
        claimed, _ = repo.claim_pending_items(now + timedelta(seconds=100), lease, "worker-b", limit=10, max_attempts=5)
        assert [i.id for i in claimed] == [item_id]
    with storage.repository() as repo:
        repo.finish_items([(item_id, None)], "worker-a")  # type: ignore[list-item]
        assert repo.held_items([item_id], "worker-a") == []
    (row,) = query(database_url, "SELECT state, lease_owner, attempts FROM feed_items")
    assert row["state"] == "pending" and row["lease_owner"] == "worker-b" and row["attempts"] == 2
    with storage.repository() as repo:
        repo.finish_items([(item_id, None)], "worker-b")  # type: ignore[list-item]
    with storage.repository() as repo:
        assert repo.held_items([item_id], "worker-a") == []  # A's late failure finds nothing to fail
    (row,) = query(database_url, "SELECT state, lease_owner FROM feed_items")
    assert row["state"] == "done" and row["lease_owner"] is None
    storage.engine.dispose()


def test_a_taken_over_feed_lease_cannot_be_settled_by_its_old_holder(database_url: str) -> None:
    """Worker A's lease on a feed runs out (it stalled); B claims the feed. A, waking up, no longer holds it:
    held_feed, which a fetch's success or failure is recorded through, finds nothing for A, and A's renewal
    and release leave B's lease alone."""
    from monitor.config import FeedConfig

    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    now = datetime.now(UTC)
    lease = timedelta(seconds=60)
    with storage.repository() as repo:
        repo.sync_feeds([FeedConfig("f", "http://127.0.0.48/feed.xml", 900)])
        (feed,) = repo.claim_feeds(now, lease, "worker-a", only_due=False)
        feed_id = feed.id
    with storage.repository() as repo:  # still A's: B gets nothing
        assert repo.claim_feeds(now + timedelta(seconds=30), lease, "worker-b", only_due=False) == []
        assert repo.held_feed(feed_id, "worker-a") is not None
    with storage.repository() as repo:  # A stalled past its lease: B takes over
        claimed = repo.claim_feeds(now + timedelta(seconds=90), lease, "worker-b", only_due=False)
        assert [f.id for f in claimed] == [feed_id]
    with storage.repository() as repo:
        assert repo.held_feed(feed_id, "worker-a") is None
        repo.renew_leases("worker-a", now + timedelta(days=1))
        repo.release_leases("worker-a")
    with storage.repository() as repo:
        held = repo.held_feed(feed_id, "worker-b")
        assert held is not None and held.lease_owner == "worker-b" and held.lease_until is not None
        assert abs(held.lease_until - (now + timedelta(seconds=150))) < timedelta(seconds=1)
    storage.engine.dispose()


def test_every_vetted_address_is_tried_in_turn() -> None:
    """A dual-stack name whose first address does not answer (an IPv6 address on an IPv4-only network)
    is reached on the next one. The resolver is the one stand-in: no name here resolves to several
    addresses; the connections are real."""
    with LoopbackServer("127.0.0.1") as server:
        server.add("/feed.xml", rss("F", server.base, []), "application/rss+xml")

        async def resolve(host: str, port: int) -> list[str]:
            assert host == "dual.test"
            return ["::1", "127.0.0.9", "127.0.0.1"]  # nothing listens on the first two at this port

        async def fetch() -> int:
            settings = Settings(**{**FAST, "allow_private_addresses": "127.0.0.0/8,::1/128"})  # type: ignore[arg-type]
            async with Fetcher(settings, resolve) as fetcher:
                response = await fetcher.get(f"http://dual.test:{server.port}/feed.xml", accept=("xml",))
                return response.status

        assert asyncio.run(fetch()) == 200
        assert server.requests[0][1]["Host"] == f"dual.test:{server.port}"


def test_extraction_has_a_time_limit(tmp_path: Path) -> None:
    """A page whose extraction outlasts MONITOR_EXTRACT_TIMEOUT fails with extract_timeout, and the worker
    goes on with a fresh executor (here every page is over the limit: each fails the same way). Each page
    takes some 0.3 s to extract against a 0.01 s limit: a limit met by an extraction already done when a
    busy machine ran the timer late is no timeout (asyncio.wait_for returns the result)."""
    database = f"sqlite:///{tmp_path}/m.db"
    with LoopbackServer("127.0.0.49") as server:
        links = [server.add(f"/{i}.html", _slow_to_extract(600)) for i in range(3)]
        feed = server.add(
            "/feed.xml",
            rss("F", server.base, [{"title": "t", "link": u, "published": datetime.now(UTC)} for u in links]),
            "application/rss+xml",
        )
        report = cycle(database, write_feeds(tmp_path / "feeds.yaml", {"f": feed}), extract_timeout=0.01)
    assert report.items_failed == 3
    errors = [r["last_error"] for r in query(database, "SELECT last_error FROM feed_items")]
    assert all("extract_timeout" in e for e in errors), errors


@pytest.mark.slow
def test_an_extraction_process_that_dies_is_replaced() -> None:
    """MONITOR_EXTRACT_PROCESSES=1. The process killed while idle (the OOM killer, an operator) breaks the
    pool: the next page rebuilds it and is extracted all the same. Killed while extracting, the page is
    extracted again at once by a fresh process; killed again, it fails with extract_crashed (tried again
    later). A page over the time limit fails with extract_timeout, and a fresh process serves the rest."""
    import os
    import signal

    from monitor.daemon.extractor import Extractor
    from monitor.errors import ExtractionError, FetchError
    from monitor.grouping import StoryParams

    def page(i: int, repeat: int = 1) -> Incoming:  # repeated: a page that takes a while
        seed, url = seeds()[i], f"https://www.example.fr/{i}.html"
        body = "\n\n".join([seed.body] * repeat)
        html_page = article_page(title=seed.title, body=body, site="S", url=url, published=seed.published)
        return Incoming(url, datetime.now(UTC), html=html_page)

    def kill_all(extractor: Extractor) -> None:
        for process in list(extractor._executor._processes.values()):  # type: ignore[attr-defined]
            os.kill(process.pid, signal.SIGKILL)
            process.join()

    async def until_extracting(extractor: Extractor) -> None:
        """Until a live process of the current pool holds the page (a fresh one first imports for ~1 s)."""
        while not any(p.is_alive() for p in (getattr(extractor._executor, "_processes", None) or {}).values()):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)

    async def scenario() -> list[str]:
        extractor = Extractor(1, 60, StoryParams())
        said = []
        try:
            said.append((await extractor.prepare(page(0))).article.url)
            kill_all(extractor)  # idle
            said.append((await extractor.prepare(page(1))).article.url)
            extracting = asyncio.ensure_future(extractor.prepare(page(2, repeat=1500)))
            await asyncio.sleep(0.1)  # extraction takes about a second
            kill_all(extractor)
            said.append((await extracting).article.url)
            extracting = asyncio.ensure_future(extractor.prepare(page(2, repeat=1500)))
            for _ in range(2):  # the page's process, then the one it is retried in
                await until_extracting(extractor)
                kill_all(extractor)
            with pytest.raises(FetchError, match="extract_crashed"):
                await extracting
            said.append((await extractor.prepare(page(3))).article.url)
            extractor.timeout = 0.0001
            with pytest.raises(ExtractionError, match="extract_timeout"):
                await extractor.prepare(page(4))
            extractor.timeout = 60
            said.append((await extractor.prepare(page(0))).article.url)
        finally:
            extractor.close()
        return said

    urls = asyncio.run(scenario())
    assert urls == [f"https://www.example.fr/{i}.html" for i in (0, 1, 2, 3, 0)]


@pytest.mark.slow
def test_a_killed_workers_items_are_taken_over_within_its_lease(tmp_path: Path, postgres_url: str) -> None:
    """Worker A holds every item (its pages hang) and is SIGKILLed; B, started at once, has them all done
    shortly after A's 3-second lease ends, each counted as a second attempt. A live worker renews: A held
    its items for longer than one lease before it was killed, and nobody took them."""
    import signal
    import subprocess
    import sys
    import threading

    release = threading.Event()
    with LoopbackServer("127.0.0.50") as server:
        items = []
        for i in range(4):
            seed = seeds()[i]
            page = article_page(
                title=seed.title, body=seed.body, site="S", url=f"{server.base}/{i}.html", published=seed.published
            ).encode()

            def hanging(_h: BaseHTTPRequestHandler, page: bytes = page) -> tuple[int, dict[str, str], bytes]:
                release.wait(30)
                return 200, {"Content-Type": "text/html; charset=utf-8"}, page

            server.routes[f"/{i}.html"] = hanging
            items.append({"title": seed.title, "link": f"{server.base}/{i}.html", "published": datetime.now(UTC)})
        feed = server.add("/feed.xml", rss("F", server.base, items), "application/rss+xml")
        env = loopback_env(
            postgres_url,
            write_feeds(tmp_path / "feeds.yaml", {"f": feed}),
            lease_seconds="3",
            poll_seconds="1",
            host_min_interval="0",
            read_timeout="60",
            request_deadline="60",
        )
        command = [sys.executable, "-m", "monitor", "run"]
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            held = "SELECT COUNT(*) AS n FROM feed_items WHERE lease_owner IS NOT NULL AND state = 'pending'"

            def all_held() -> bool:
                try:
                    return bool(query(postgres_url, held)[0]["n"] == 4)
                except Exception:
                    return False

            deadline = time.monotonic() + 60
            while not all_held():
                assert time.monotonic() < deadline, "worker A never held the items"
                time.sleep(0.2)
            leases = "SELECT id, lease_owner, lease_until, attempts FROM feed_items ORDER BY id"
            taken = query(postgres_url, leases)
            time.sleep(3.5)  # past the end of the leases A took: renewed, still A's, not taken again
            held_on = query(postgres_url, leases)
            assert [r["lease_owner"] for r in held_on] == [r["lease_owner"] for r in taken]
            assert all(now["lease_until"] > then["lease_until"] for now, then in zip(held_on, taken, strict=True))
            assert [r["attempts"] for r in held_on] == [1, 1, 1, 1]
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        release.set()
        killed = time.monotonic()
        second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            done = "SELECT COUNT(*) AS n FROM feed_items WHERE state = 'done'"
            while query(postgres_url, done)[0]["n"] < 4:
                assert time.monotonic() - killed < 30, "the dead worker's items were not taken over"
                time.sleep(0.2)
        finally:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=20)
    rows = query(postgres_url, "SELECT attempts, lease_owner FROM feed_items")
    assert [r["attempts"] for r in rows] == [2, 2, 2, 2] and all(r["lease_owner"] is None for r in rows)
    assert len(query(postgres_url, "SELECT id FROM articles")) == 4


def test_a_pathological_page_does_not_hold_up_the_others(tmp_path: Path) -> None:
    """A page whose extraction takes seconds (860 KB of paragraphs) fails with extract_timeout; the pages
    that arrive while it is being extracted wait for a free extractor, not for it, and are all stored."""
    database = f"sqlite:///{tmp_path}/m.db"
    with LoopbackServer("127.0.0.51") as server:
        slow = server.add("/slow.html", _slow_to_extract(6000))
        links = [slow]
        for i in range(3):
            link = _page(server, i, f"/{i}.html")
            page = server.routes[f"/{i}.html"]

            def late(_h: BaseHTTPRequestHandler, page: Any = page) -> Any:
                time.sleep(0.5)  # the pathological page reaches the extractor first
                return page

            server.routes[f"/{i}.html"] = late
            links.append(link)
        feed = server.add(
            "/feed.xml",
            rss("F", server.base, [{"title": "t", "link": u, "published": datetime.now(UTC)} for u in links]),
            "application/rss+xml",
        )
        report = cycle(
            database, write_feeds(tmp_path / "feeds.yaml", {"f": feed}), extract_timeout=2.0, max_body_bytes=2_000_000
        )
    assert report.articles_added == 3 and report.items_failed == 1, report.errors
    (failed,) = query(database, "SELECT url, last_error FROM feed_items WHERE state = 'failed'")
    assert failed["url"] == slow and "extract_timeout" in failed["last_error"]
