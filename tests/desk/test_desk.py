"""The read model behind the pages, the API and the CLI: counts that stop early, outlets found along their
index, and the next digest's preview, on real SQLite and PostgreSQL databases filled through the CLI; then
what the desk shows of it, over real HTTP: periods, watch queries, feed tags, pages of stories, near-copies,
digest runs and local times."""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import httpx
import lxml.html
import psycopg
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.corpus import RPM2, LoopbackServer, article_page, rss, seeds
from monitor.config import DigestConfig, Settings, load_digests
from monitor.desk import read
from monitor.desk.params import StoryFilter
from monitor.desk.read import Desk
from monitor.desk.times import relative
from monitor.digests.build import build
from monitor.digests.runs import MAX_ATTEMPTS, Digester
from monitor.storage import Storage
from tests.support import (
    COPIER,
    ENGINES,
    POSTGRES_ADMIN,
    free_port,
    loopback_env,
    own_database,
    query,
    recent_articles,
    run_cli,
    seed_database,
    serving,
)


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


# --- What the desk shows, over HTTP, of one database per engine that the tests below only read ---------------

PARIS = ZoneInfo("Europe/Paris")
LABELS = ("today", "yesterday", "this_week", "weeks_ago")


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


@dataclass(frozen=True)
class Corpus:
    """`monitor web` over rpm2-dev (at its own dates, 2008) and ``recent_articles``, with one digest run sent
    and one given up: what was imported, each article's story, and the moment the recent dates count back from."""

    base: str
    env: dict[str, str]
    lines: list[dict[str, str]]
    story_of: dict[str, int]  # each article's URL: its story
    now: datetime
    refused_port: int  # where the failing digest found no SMTP server

    def story(self, label: str) -> int:
        (found,) = self.stories(line for line in self.lines if line["story"] == label)
        return found

    def stories(self, lines: Iterable[dict[str, str]]) -> set[int]:
        return {self.story_of[line["url"]] for line in lines}

    def mentioning(self, *words: str) -> set[int]:
        """Stories with an article whose title or text has every word (whole, whatever the case and accents):
        what a watch query of these words must keep, found without the product's search."""
        return self.stories(
            line
            for line in self.lines
            if all(re.search(rf"\b{_folded(w)}\b", _folded(f"{line['title']} {line['text']}")) for w in words)
        )


def _send_digests(env: dict[str, str], url: str, feeds: Path) -> int:
    """`monitor digest matin --send` to a real SMTP server; `monitor digest soir --send` to a port nobody
    listens on, then retried as the daemon retries (the backoff waited out in the database) until given up.
    Returns that port."""
    received: list[bytes] = []

    class Inbox:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.original_content)
            return "250 OK"

    smtp = {"MONITOR_SMTP_HOST": "127.0.0.1", "MONITOR_SMTP_SECURITY": "none"}
    controller = Controller(Inbox(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        sent = run_cli("digest", "matin", "--send", env={**env, **smtp, "MONITOR_SMTP_PORT": str(controller.port)})
    finally:
        controller.stop()
    assert sent.returncode == 0 and sent.stdout.rstrip().endswith(": sent"), sent.stdout + sent.stderr
    assert len(received) == 1
    closed = free_port()
    refused = run_cli("digest", "soir", "--send", env={**env, **smtp, "MONITOR_SMTP_PORT": str(closed)})
    assert refused.returncode == 1 and refused.stdout.rstrip().endswith(": pending"), refused.stdout + refused.stderr
    settings = Settings(
        database_url=url, feeds_file=feeds, smtp_host="127.0.0.1", smtp_port=closed, smtp_security="none"
    )
    storage = Storage(url)
    engine = create_engine(url)
    try:
        for _ in range(MAX_ATTEMPTS - 1):
            with engine.begin() as db:
                db.execute(text("UPDATE digest_runs SET next_attempt_at = '2000-01-01 00:00:00' WHERE digest = 'soir'"))
            Digester(settings, storage, load_digests(feeds)).retry_due()
    finally:
        engine.dispose()
        storage.engine.dispose()
    return closed


@pytest.fixture(scope="module", params=ENGINES)
def corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    """Built once per engine through the real commands (`monitor import` of all of rpm2-dev and
    ``recent_articles``, the digests of ``_send_digests``), then served by `monitor web`; on PostgreSQL the
    database refuses writes from then on, so a test that wrote would fail rather than change the others' data."""
    engine = request.param
    directory = tmp_path_factory.mktemp(f"desk-{engine}")
    now = datetime.now(UTC)
    lines = [json.loads(line) for line in RPM2.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines += recent_articles(now)
    archive = directory / "corpus.jsonl"
    archive.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    feeds = directory / "feeds.yaml"
    feeds.write_text(
        "feeds:\n  - {name: Exemple, url: 'https://www.example.fr/feed/'}\ndigests:\n"
        "  - {name: matin, recipients: [veille@example.fr], schedule: '0 7 * * *'}\n"
        "  - {name: soir, recipients: [veille@example.fr], schedule: '0 18 * * *'}\n",
        encoding="utf-8",
    )
    with own_database(engine, directory) as url:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")},
            "MONITOR_DATABASE_URL": url,
            "MONITOR_FEEDS_FILE": str(feeds),
            "COLUMNS": "200",
        }
        imported = run_cli("import", str(archive), env=env)
        assert f"{len(lines)} articles added" in imported.stdout, imported.stdout + imported.stderr
        refused_port = _send_digests(env, url, feeds)
        story_of = {row["url"]: row["story_id"] for row in query(url, "SELECT url, story_id FROM articles")}
        assert set(story_of) == {line["url"] for line in lines}
        if engine == "postgresql":
            with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{make_url(url).database}" SET default_transaction_read_only = on')
        with serving(env) as base:
            built = Corpus(base, env, lines, story_of, now, refused_port)
            # what the tests count on: each recent story apart from the others and from rpm2-dev's
            assert len({built.story(label) for label in LABELS}) == len(LABELS)
            assert not {built.story(label) for label in LABELS} & built.stories(
                line for line in lines if line["story"] not in LABELS
            )
            yield built


def _api(base: str, path: str, **params: str | int) -> Any:
    response = httpx.get(base + path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(page: Any) -> list[int]:
    return [story["id"] for story in page["items"]]


def _tree(base: str, path: str, params: dict[str, str | int] | None = None) -> Any:
    response = httpx.get(base + path, params=params)
    assert response.status_code == 200, response.text
    return lxml.html.fromstring(response.text)


def _listed(tree: Any) -> list[int]:
    """The stories a stories page lists, in order."""
    return [int(n) for n in tree.xpath('//ol[@class="stories"]/li[@class="story"]/@data-story')]


def _words(element: Any) -> str:
    return " ".join(element.text_content().split())


def test_periods_keep_the_stories_published_in_them(corpus: Corpus) -> None:
    """24 hours, 7 days and a range of days (``to`` takes in its whole day, in Paris) on the page; relative
    periods on the API."""
    base = corpus.base
    today, yesterday, this_week, weeks_ago = (corpus.story(label) for label in LABELS)

    def day(hours: int) -> str:
        return (corpus.now - timedelta(hours=hours)).astimezone(PARIS).date().isoformat()

    assert _listed(_tree(base, "/", {"period": "24h"})) == [today]
    assert _listed(_tree(base, "/", {"period": "7d"})) == [today, yesterday, this_week]  # 4 outlets, then recency
    assert _listed(_tree(base, "/", {"from": day(96), "to": day(96)})) == [this_week]
    assert _listed(_tree(base, "/", {"from": day(384), "to": day(96)})) == [weeks_ago, this_week]
    assert _listed(_tree(base, "/", {"from": day(96)})) == [today, yesterday, this_week]
    rpm2 = corpus.stories(line for line in corpus.lines if line["story"] not in LABELS)
    older = _tree(base, "/", {"to": day(384)})
    assert f"{len(rpm2) + 1} sujets correspondent aux filtres" in _words(older.get_element_by_id("count"))
    assert older.xpath('//input[@name="to"]/@value') == [day(384)]

    assert _ids(_api(base, "/api/stories", since="24h")) == [today]
    assert _ids(_api(base, "/api/stories", since="2d")) == [today, yesterday]
    assert _ids(_api(base, "/api/stories", since="7d", until="2d")) == [this_week]
    assert set(_ids(_api(base, "/api/stories", until=day(384), limit=200))) == rpm2 | {weeks_ago}


def test_a_watch_query_keeps_the_stories_that_match_it(corpus: Corpus) -> None:
    """``q`` keeps the stories with an article that has every word: among rpm2-dev's stories on the API, among
    the recent ones on the page, and within the period when there is one."""
    base = corpus.base
    today, _yesterday, _this_week, weeks_ago = (corpus.story(label) for label in LABELS)
    tibet = corpus.mentioning("Tibet")
    assert 1 < len(tibet) < len(set(corpus.story_of.values())) // 2
    assert set(_ids(_api(base, "/api/stories", q="Tibet", limit=200))) == tibet
    assert set(_listed(_tree(base, "/", {"q": "Tibet"}))) == tibet

    assert corpus.mentioning("Clegg") == {today, weeks_ago}
    assert _listed(_tree(base, "/", {"q": "Clegg"})) == [today, weeks_ago]
    assert _listed(_tree(base, "/", {"q": "Clegg", "period": "7d"})) == [today]  # 004 names him too, 16 days ago
    assert corpus.mentioning("Clegg", "Lockheed") == {today}
    assert _ids(_api(base, "/api/stories", q="Clegg Lockheed")) == [today]  # every word must match
    assert _ids(_api(base, "/api/stories", q='"Nick Clegg"', since="7d")) == [today]


def test_stories_come_in_pages_that_keep_the_filters(corpus: Corpus) -> None:
    """Every story of the seeds and rpm2-dev exactly once across the API's pages (``next_offset`` until there is
    none, ``total_exact``), and every article through them; the page's previous/next links keep the filters."""
    base = corpus.base
    everything = set(corpus.story_of.values())
    assert len(everything) > 20  # more than a page
    ranked = _ids(_api(base, "/api/stories", limit=200))
    walked: list[int] = []
    offset: int | None = 0
    while offset is not None:
        page = _api(base, "/api/stories", limit=7, offset=offset)
        assert (page["total"], page["total_exact"], page["offset"], page["limit"]) == (len(everything), True, offset, 7)
        assert page["items"], offset
        walked += _ids(page)
        offset = page["next_offset"]
        assert offset == (None if len(walked) == len(everything) else len(walked)), page
    assert walked == ranked and set(walked) == everything and len(walked) == len(everything)
    articles = [a["url"] for story in walked for a in _api(base, f"/api/stories/{story}")["articles"]]
    assert sorted(articles) == sorted(corpus.story_of)

    rpm2 = corpus.stories(line for line in corpus.lines if line["story"] not in LABELS)
    filters = [("to", "2008-12-31"), ("min_outlets", "1")]
    first = _tree(base, "/", dict(filters))
    assert f"{len(rpm2)} sujets correspondent aux filtres" in _words(first.get_element_by_id("count"))
    assert not first.xpath('//a[@rel="prev"]')
    (following,) = first.xpath('//nav[@class="pager"]/a[@rel="next"]/@href')
    assert parse_qsl(urlsplit(following).query) == [*filters, ("offset", "20")]
    second = _tree(base, "/" + following)
    assert second.xpath('//ol[@class="stories"]/@start') == ["21"] and not second.xpath('//a[@rel="next"]')
    (back,) = second.xpath('//nav[@class="pager"]/a[@rel="prev"]/@href')
    assert parse_qsl(urlsplit(back).query) == filters
    assert _listed(_tree(base, "/" + back)) == _listed(first)
    assert len(_listed(first)) == 20 and _listed(first) + _listed(second) == _ids(
        _api(base, "/api/stories", until="2008-12-31", limit=200)
    )
    assert set(_listed(first) + _listed(second)) == rpm2
    (onward,) = _tree(base, "/").xpath('//a[@rel="next"]/@href')
    assert parse_qsl(urlsplit(onward).query) == [("offset", "20")]


def test_near_copies_are_collapsed_under_their_original(corpus: Corpus) -> None:
    """The reprint of 004 is no coverage line of its own: it is under 004, on the story page ("Repris par")
    and in `monitor story` ("↳ copied by"), with why it is there."""
    story = corpus.story("weeks_ago")
    by_source = {a["source"]: a for a in _api(corpus.base, f"/api/stories/{story}")["articles"]}
    assert sorted(by_source) == sorted([COPIER, "outlet-004"])
    original, copy = by_source["outlet-004"], by_source[COPIER]
    assert copy["placement_method"] == "near_copy" and copy["duplicate_of_id"] == original["id"]

    page = _tree(corpus.base, f"/stories/{story}")
    (line,) = page.xpath('//ol[@id="coverage"]/li')
    assert line.get("id") == f"article-{original['id']}"
    assert line.xpath('./p/a[@class="link"]/@href') == [original["url"]]
    (copies,) = line.xpath('./details[@class="copies"]')
    assert _words(copies.xpath("./summary")[0]) == f"Repris par {COPIER}"
    (shown,) = copies.xpath("./ul/li")
    assert shown.get("id") == f"article-{copy['id']}" and shown.xpath('./a[@class="link"]/@href') == [copy["url"]]
    why = _words(shown.xpath('./p[@class="why"]')[0])
    assert why.startswith(f"Pourquoi ici : quasi-copie de l'article n° {original['id']} (similarité 0,9"), why

    done = run_cli("story", str(story), env=corpus.env)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    at = next(i for i, text in enumerate(out) if f" outlet-004 [{original['id']}]: " in text)
    assert out[at + 1].strip() == original["url"] and out[at + 2].strip().startswith("why: ")
    copied = rf"      ↳ copied by {COPIER} \[{copy['id']}\] \d\d/\d\d/\d{{4}} \d\d:\d\d: {re.escape(copy['url'])}"
    assert re.fullmatch(copied, out[at + 3]), out
    assert out[at + 4].startswith(f"        why: near-copy of article {original['id']} (similarity 0.9"), out
    assert sum(COPIER in text for text in out) == 1  # once, under its original


def test_digest_runs_show_their_state_and_error(corpus: Corpus) -> None:
    """The run sent and the run given up after its tries, with their error, on /api/digests and /digests; the
    story the sent digest carried names it."""
    runs = {run["digest"]: run for run in _api(corpus.base, "/api/digests")["runs"]}
    assert sorted(runs) == ["matin", "soir"]
    sent, failed = runs["matin"], runs["soir"]
    assert (sent["state"], sent["attempts"], sent["last_error"], sent["story_count"]) == ("sent", 1, None, 1)
    assert sent["message_id"] and datetime.fromisoformat(sent["sent_at"]).utcoffset() is not None
    assert (failed["state"], failed["attempts"], failed["sent_at"]) == ("failed", MAX_ATTEMPTS, None)
    assert failed["last_error"].startswith(f"digest 'soir': SMTP 127.0.0.1:{corpus.refused_port}: "), failed

    def period(run: dict[str, Any]) -> str:
        start, end = (datetime.fromisoformat(run[f"period_{k}"]).astimezone(PARIS) for k in ("start", "end"))
        return f"{start:%d/%m/%Y %H:%M} → {end:%d/%m/%Y %H:%M}"

    page = _tree(corpus.base, "/digests")
    rows = {
        row.get("class"): [_words(cell) for cell in row.xpath("./td")]
        for row in page.xpath('//table[@class="runs"]/tbody/tr')
    }
    assert rows == {
        "run-sent": ["matin", period(sent), "envoyée", "1", ""],
        "run-failed": ["soir", period(failed), f"échec ({MAX_ATTEMPTS} essais)", "1", failed["last_error"]],
    }
    carried = _words(_tree(corpus.base, f"/stories/{corpus.story('today')}"))
    end = datetime.fromisoformat(sent["period_end"]).astimezone(PARIS)
    assert f"« matin » du {end:%d/%m/%Y %H:%M}, en position 1 (envoyée le " in carried


def test_times_are_shown_on_the_local_clock(seeded_desk: tuple[str, dict[str, str], dict[str, int]]) -> None:
    """Seed 001, stored as published at 2024-11-05T09:00Z: 10:00 in Paris (the default zone) and 18:00 with
    MONITOR_TIMEZONE=Asia/Tokyo, on the story page and in `monitor story`; the API gives the same instant, in
    ISO 8601 with an offset, whatever the zone."""
    paris, env, story = seeded_desk
    moment = datetime(2024, 11, 5, 9, 0, tzinfo=UTC)
    tokyo_env = {**env, "MONITOR_TIMEZONE": "Asia/Tokyo"}
    with serving(tokyo_env) as tokyo:
        for base, clock, zone in ((paris, "10:00", "Europe/Paris"), (tokyo, "18:00", "Asia/Tokyo")):
            articles = _api(base, f"/api/stories/{story['001']}")["articles"]
            (article,) = [a for a in articles if a["source"] == "outlet-001"]
            published = datetime.fromisoformat(article["published_at"])
            assert published == moment and published.utcoffset() is not None, article
            page = _tree(base, f"/stories/{story['001']}")
            (when,) = page.xpath(f'//li[@id="article-{article["id"]}"]/p[@class="when"]/time')
            assert when.text == f"05/11/2024 {clock}", zone
            assert datetime.fromisoformat(when.get("datetime")) == moment
            assert f"heures de {zone}" in _words(page.xpath("//footer")[0])
    for zone_env, clock, zone in ((env, "10:00", "Europe/Paris"), (tokyo_env, "18:00", "Asia/Tokyo")):
        done = run_cli("story", str(story["001"]), env=zone_env)
        assert done.returncode == 0, done.stderr
        assert f"\n  05/11/2024 {clock}  outlet-001 [{article['id']}]: " in done.stdout, done.stdout
        assert f"({zone})" in done.stdout.splitlines()[1]


@pytest.mark.parametrize(
    ("days", "french", "english"),
    [
        (0.5, "12 h", "12 h"),
        (45, "45 j", "45 d"),
        (60, "60 j", "60 d"),
        (61, "2 mois", "2 months"),
        (400, "13 mois", "13 months"),
        (6632, "18 ans", "18 years"),
    ],
)
def test_a_time_long_past_is_told_in_months_or_years(days: float, french: str, english: str) -> None:
    """A story of 2008 is « il y a 18 ans », not « il y a 6632 j »."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert relative(now - timedelta(days=days), now) == f"il y a {french}"
    assert relative(now + timedelta(days=days), now, french=False) == f"in {english}"


def test_a_feed_tag_keeps_the_stories_with_an_article_from_its_feeds(database_url: str, tmp_path: Path) -> None:
    """Two loopback feeds fetched by `monitor run --once`, one with tags in feeds.yaml: 000 comes through the
    tagged feed, 001 (the same story) and 004 (another) through the other. A tag keeps the first story only,
    on the API, the page (whose menu offers the tags) and the CLI."""
    seed = {s.name: s for s in seeds()}

    def publish(server: LoopbackServer, names: list[str], site: str) -> str:
        items = []
        for name in names:
            url = f"{server.base}/{name}.html"
            s = seed[name]
            server.add(
                f"/{name}.html", article_page(title=s.title, body=s.body, site=site, url=url, published=s.published)
            )
            items.append(
                {"title": s.title, "link": url, "published": datetime.fromisoformat(f"{s.published}T09:30+01:00")}
            )
        return server.add("/feed/", rss(site, server.base, items), "application/rss+xml; charset=utf-8")

    with LoopbackServer("127.0.0.2") as tagged, LoopbackServer("127.0.0.3") as other:
        feeds_file = tmp_path / "feeds.yaml"
        feeds_file.write_text(
            f'feeds:\n  - {{name: "Défense", url: "{publish(tagged, ["000"], "Défense")}", tags: [armees, usa]}}\n'
            f'  - {{name: "Tech", url: "{publish(other, ["001", "004"], "Tech")}"}}\n',
            encoding="utf-8",
        )
        env = {**loopback_env(database_url, feeds_file, host_min_interval="0"), "COLUMNS": "200"}
        done = run_cli("run", "--once", env=env)
        assert done.returncode == 0 and "2 feeds fetched, 0 failed" in done.stdout, done.stdout + done.stderr
    rows = query(database_url, "SELECT a.url, a.story_id, f.name FROM articles a JOIN feeds f ON f.id = a.feed_id")
    assert {row["url"].rsplit("/", 1)[1]: row["name"] for row in rows} == {
        "000.html": "Défense",
        "001.html": "Tech",
        "004.html": "Tech",
    }
    story = {row["url"].rsplit("/", 1)[1][:3]: row["story_id"] for row in rows}
    assert story["000"] == story["001"] != story["004"]

    with serving(env) as base:
        assert sorted(_ids(_api(base, "/api/stories"))) == sorted([story["000"], story["004"]])
        for tag in ("armees", "usa"):
            assert _ids(_api(base, "/api/stories", tag=tag)) == [story["000"]], tag
        page = _tree(base, "/", {"tag": "armees"})
        assert _listed(page) == [story["000"]]
        assert page.xpath('//select[@name="tag"]/option/text()') == ["Tous", "armees", "usa"]
        assert page.xpath('//select[@name="tag"]/option[@selected]/text()') == ["armees"]
    listed = run_cli("stories", "--tag", "usa", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert _ids(json.loads(listed.stdout)) == [story["000"]]
