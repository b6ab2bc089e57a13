"""Digest e-mails through a real SMTP server on loopback, from articles ingested by the normal pipeline."""

from __future__ import annotations

import email
import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from html import unescape
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import String, bindparam, cast, create_engine, insert, literal, select, text

from monitor.config import DigestConfig, FeedConfig, Settings, load_digests
from monitor.digests.build import build
from monitor.digests.periods import next_fire, period_start, scheduled_end
from monitor.digests.render import render
from monitor.digests.runs import Digester, warn_unknown_outlets
from monitor.errors import ConfigError
from monitor.pipeline.importing import import_file
from monitor.pipeline.placement import Ingestor
from monitor.search import index_terms, parse_query
from monitor.storage import Article, Storage
from monitor.storage import Story as StoryRow
from tests.support import connected, digest_corpus, free_port, loopback_env, minute_soon, running_daemon, wait_until

END = datetime(2024, 11, 7, 6, 0, tzinfo=UTC)  # 07:00 in Paris


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.original_content, policy=default_policy))  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def _setup(tmp_path: Path, database_url: str, port: int, **digest: object) -> tuple[Settings, Storage, DigestConfig]:
    storage = Storage(database_url)
    storage.upgrade()
    report = import_file(digest_corpus(tmp_path), Ingestor(storage))
    assert report.errors == []
    settings = Settings(
        database_url=database_url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        smtp_from="veille@monitor.example.fr",
    )
    config = DigestConfig(
        **{
            "name": "matin",
            "recipients": ("analyste@example.fr", "chef@example.fr"),
            "schedule": "0 7 * * *",
            "period_s": 4 * 86400,
            **digest,
        }
    )  # type: ignore[arg-type]
    return settings, storage, config


def _parts(msg: EmailMessage) -> tuple[str, str]:
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


def test_digest_is_sent_well_formed_ranked_and_collapsed(tmp_path: Path, database_url: str, smtp) -> None:  # type: ignore[no-untyped-def]
    inbox, port = smtp
    settings, storage, config = _setup(tmp_path, database_url, port)
    assert Digester(settings, storage, [config]).run("matin", END) == "sent"
    assert len(inbox.messages) == 1
    msg = inbox.messages[0]
    assert inbox.envelopes[0] == ("veille@monitor.example.fr", ["analyste@example.fr", "chef@example.fr"])
    assert msg["From"] == "veille@monitor.example.fr" and msg["To"] == "analyste@example.fr, chef@example.fr"
    assert msg["Subject"] == "Veille « matin » du 7 novembre 2024 : 2 sujets"
    assert msg["Message-ID"].endswith("@monitor.example.fr>") and msg["Date"]
    plain, html = _parts(msg)

    with connected(database_url) as db:
        articles = db.execute(text("SELECT id, url, source, story_id, duplicate_of_id FROM articles")).mappings().all()
        ranked = (
            db.execute(
                text(
                    "SELECT id, title, outlet_count FROM stories WHERE last_published_at >= :s "
                    "ORDER BY outlet_count DESC, last_published_at DESC"
                ),
                {"s": (END - timedelta(days=4)).replace(tzinfo=None)},
            )
            .mappings()
            .all()
        )
    assert [r["outlet_count"] for r in ranked] == [5, 2]
    shown = unescape(html)
    assert shown.index(ranked[0]["title"][:40]) < shown.index(ranked[1]["title"][:40])  # most outlets first
    assert plain.index(ranked[0]["title"][:40]) < plain.index(ranked[1]["title"][:40])
    assert "5 médias" in html and "2 médias" in html
    in_period = [a for a in articles if a["story_id"] in {r["id"] for r in ranked}]
    for article in in_period:
        assert f'href="{article["url"]}"' in html and article["url"] in plain  # every article is linked
    copy = next(a for a in articles if a["source"] == "Agence Reprise")
    assert copy["duplicate_of_id"] is not None
    assert "Repris par" in html and html.count(copy["url"]) == 1  # listed once, under its original
    assert "Média 004" not in html  # 004's story is outside the period
    assert "style=" in html and "<style" not in html  # CSS inlined for mail clients
    assert "sujets, classés par nombre de médias" in html


def test_query_and_outlet_filters(tmp_path: Path, smtp) -> None:  # type: ignore[no-untyped-def]
    inbox, port = smtp
    database_url = f"sqlite:///{tmp_path}/q.db"
    settings, storage, config = _setup(tmp_path, database_url, port, query='"Lockheed Martin" militaires')
    digest = build(storage, config, END)
    assert [s.outlet_count for s in digest.stories] == [5]
    other = build(storage, DigestConfig(**{**config.__dict__, "query": "dalaï-lama Tibet"}), END)
    assert [s.outlet_count for s in other.stories] == [2]
    by_outlet = build(storage, DigestConfig(**{**config.__dict__, "query": None, "outlets": ("Journal 1",)}), END)
    assert [s.outlet_count for s in by_outlet.stories] == [2]
    nothing = DigestConfig(**{**config.__dict__, "name": "vide", "query": "photosynthèse"})
    assert Digester(settings, storage, [nothing]).run("vide", END) == "empty"
    note = DigestConfig(**{**config.__dict__, "name": "note", "query": "photosynthèse", "send_empty": True})
    assert Digester(settings, storage, [note]).run("note", END) == "sent"
    assert len(inbox.messages) == 1 and "rien de nouveau" in inbox.messages[0]["Subject"]
    subject, plain, _html = render(digest)
    assert "Rien de nouveau" not in plain and "1 sujet" in subject


def test_no_double_send_across_restart_and_workers(tmp_path: Path, database_url: str, smtp) -> None:  # type: ignore[no-untyped-def]
    inbox, port = smtp
    settings, _storage, config = _setup(tmp_path, database_url, port)
    results: list[str] = []
    workers = [
        threading.Thread(
            target=lambda: results.append(Digester(settings, Storage(database_url), [config]).run("matin", END))
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(results) in (["sending", "sent"], ["sent", "sent"])
    restarted = Digester(settings, Storage(database_url), [config])  # a new process, same database
    assert restarted.run("matin", END) == "sent"
    restarted.retry_due()
    assert len(inbox.messages) == 1
    with connected(database_url) as db:
        runs = db.execute(text("SELECT state, attempts, message_id FROM digest_runs")).mappings().all()
    assert len(runs) == 1 and runs[0]["state"] == "sent" and runs[0]["attempts"] == 1
    assert runs[0]["message_id"] == str(inbox.messages[0]["Message-ID"]).strip()


def test_failed_delivery_is_retried_then_reported(tmp_path: Path, smtp) -> None:  # type: ignore[no-untyped-def]
    inbox, port = smtp
    database_url = f"sqlite:///{tmp_path}/retry.db"
    settings, storage, config = _setup(tmp_path, database_url, free_port())  # nobody listens there
    digester = Digester(settings, storage, [config])
    assert digester.run("matin", END) == "pending"
    engine = create_engine(database_url)

    def run_row() -> dict:  # type: ignore[type-arg]
        with engine.connect() as db:
            return dict(db.execute(text("SELECT * FROM digest_runs")).mappings().one())

    first = run_row()
    assert first["attempts"] == 1 and "SMTP 127.0.0.1" in first["last_error"] and first["state"] == "pending"
    for _ in range(10):  # make every retry due at once
        with engine.begin() as db:
            db.execute(text("UPDATE digest_runs SET next_attempt_at = '2000-01-01 00:00:00'"))
        digester.retry_due()
    final = run_row()
    assert final["state"] == "failed" and final["attempts"] == 5
    # the mail server is back: a failed run is reported, not silently re-sent; a new period goes out
    working = Digester(Settings(**{**settings.model_dump(), "smtp_port": port}), storage, [config])
    working.retry_due()
    assert inbox.messages == []
    assert working.run("matin", END + timedelta(days=1)) == "sent" and len(inbox.messages) == 1
    engine.dispose()


def test_a_crash_mid_delivery_is_reported_not_resent(tmp_path: Path, smtp) -> None:  # type: ignore[no-untyped-def]
    inbox, port = smtp
    database_url = f"sqlite:///{tmp_path}/crash.db"
    settings, storage, config = _setup(tmp_path, database_url, port)
    with storage.repository() as repo:  # a worker claimed the run, then died before recording the outcome
        run = repo.record_digest_run("matin", END - timedelta(days=4), END)
        assert repo.claim_digest_run(run.id, datetime.now(UTC))
        repo.digest_run(run.id).claimed_at = datetime.now(UTC) - timedelta(hours=1)
    digester = Digester(settings, Storage(database_url), [config])
    assert digester.run("matin", END) == "sending"
    digester.retry_due()
    with storage.repository() as repo:
        run = repo.digest_run(run.id)
        assert run.state == "failed" and "interrupted during delivery" in (run.last_error or "")
    assert inbox.messages == []


def test_daemon_sends_digests_on_their_schedule(tmp_path: Path, smtp) -> None:  # type: ignore[no-untyped-def]
    """A digest due every minute: the running daemon sends it once for that minute, by itself."""

    from benchmarks.corpus import LoopbackServer, rss

    inbox, port = smtp
    with LoopbackServer("127.0.0.50") as server:
        feed = server.add("/feed.xml", rss("Vide", server.base, []), "application/rss+xml")
        feeds_file = tmp_path / "feeds.yaml"
        feeds_file.write_text(
            f'feeds:\n  - {{name: Vide, url: "{feed}"}}\ndigests:\n'
            "  - {name: minute, recipients: [veille@example.fr], schedule: '* * * * *', "
            "period: 1h, send_empty: true}\n",
            encoding="utf-8",
        )
        env = loopback_env(
            f"sqlite:///{tmp_path}/daemon.db",
            feeds_file,
            smtp_host="127.0.0.1",
            smtp_port=str(port),
            smtp_security="none",
        )
        with running_daemon(env, minute_soon()) as daemon:
            wait_until(lambda: bool(inbox.messages), timeout_s=80)
    assert len(inbox.messages) == 1, daemon.stderr
    assert inbox.messages[0]["Subject"].startswith("Veille « minute »")
    assert daemon.process.returncode == 0


def test_cli_preview_send_and_user_templates(tmp_path: Path, smtp) -> None:  # type: ignore[no-untyped-def]
    from tests.support import run_cli

    inbox, port = smtp
    feeds_file = tmp_path / "feeds.yaml"
    feeds_file.write_text(
        "feeds:\n  - {name: A, url: 'https://a.example.fr/feed'}\ndigests:\n"
        "  - {name: matin, recipients: [veille@example.fr], schedule: '0 7 * * *', period: 4d}\n",
        encoding="utf-8",
    )
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "digest.txt.j2").write_text(
        "Notre veille maison : {% for s in digest.stories %}[{{ s.outlet_count }}]{% endfor %}\n", encoding="utf-8"
    )
    env = {
        "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "MONITOR_FEEDS_FILE": str(feeds_file),
        "MONITOR_SMTP_HOST": "127.0.0.1",
        "MONITOR_SMTP_PORT": str(port),
        "MONITOR_SMTP_SECURITY": "none",
        "MONITOR_TEMPLATES_DIR": str(templates),
    }
    assert run_cli("import", str(digest_corpus(tmp_path)), env=env).returncode == 0
    preview = run_cli(
        "digest", "matin", "--preview", str(tmp_path / "out.html"), "--at", "2024-11-07T06:00:00", env=env
    )
    assert preview.returncode == 0, preview.stderr
    assert "2 sujets" in preview.stdout and "5 médias" in (tmp_path / "out.html").read_text(encoding="utf-8")
    assert inbox.messages == []  # a preview sends nothing
    sent = run_cli("digest", "matin", "--send", "--at", "2024-11-07T06:00:00", env=env)
    assert sent.returncode == 0 and ": sent" in sent.stdout, sent.stderr
    again = run_cli("digest", "matin", "--send", "--at", "2024-11-07T06:00:00", env=env)
    assert again.returncode == 0 and len(inbox.messages) == 1  # same period: not sent twice
    plain, html = _parts(inbox.messages[0])
    assert plain.strip() == "Notre veille maison : [5][2]"  # the user's text template replaced ours
    assert "5 médias" in html  # the shipped HTML template still serves
    unknown = run_cli("digest", "soir", "--send", env=env)
    assert unknown.returncode == 2 and "no digest named 'soir'" in unknown.stderr


def test_a_digest_that_fails_to_build_is_retried_then_sent_once(tmp_path: Path, smtp) -> None:  # type: ignore[no-untyped-def]
    """A user template that breaks at render time: the run waits and is retried like an SMTP failure, is sent
    once the template is fixed, and is given up after the same number of tries if it never is."""
    inbox, port = smtp
    database_url = f"sqlite:///{tmp_path}/build.db"
    settings, storage, config = _setup(tmp_path, database_url, port)
    templates = tmp_path / "templates"
    templates.mkdir()
    template = templates / "digest.txt.j2"
    template.write_text("{% for s in digest.stories %}{{ s.no_such.field }}{% endfor %}\n", encoding="utf-8")
    digester = Digester(settings.model_copy(update={"templates_dir": templates}), storage, [config])
    engine = create_engine(database_url)

    def runs() -> list[dict]:  # type: ignore[type-arg]
        with engine.connect() as db:
            return [dict(r) for r in db.execute(text("SELECT * FROM digest_runs ORDER BY id")).mappings()]

    def make_due() -> None:
        with engine.begin() as db:
            db.execute(text("UPDATE digest_runs SET next_attempt_at = '2000-01-01 00:00:00'"))

    assert digester.run("matin", END) == "pending"
    first = runs()[0]
    assert first["state"] == "pending" and first["attempts"] == 1 and "no_such" in first["last_error"]
    digester.retry_due()  # not due yet: the backoff holds it
    assert runs()[0]["attempts"] == 1
    make_due()
    digester.retry_due()
    assert runs()[0]["state"] == "pending" and runs()[0]["attempts"] == 2
    template.write_text("Notre veille : {% for s in digest.stories %}[{{ s.outlet_count }}]{% endfor %}\n")
    make_due()
    digester.retry_due()
    digester.retry_due()
    sent = runs()[0]
    assert sent["state"] == "sent" and sent["attempts"] == 3 and sent["last_error"] is None
    assert len(inbox.messages) == 1 and _parts(inbox.messages[0])[0].strip() == "Notre veille : [5][2]"

    template.write_text("{{ digest.stories[0].no_such.field }}\n", encoding="utf-8")  # broken for good
    assert digester.run("matin", END + timedelta(days=1)) == "pending"
    for _ in range(8):
        make_due()
        digester.retry_due()
    gave_up = runs()[1]
    assert gave_up["state"] == "failed" and gave_up["attempts"] == 5
    assert "building the digest failed" in gave_up["last_error"] and "interrupted" not in gave_up["last_error"]
    assert len(inbox.messages) == 1
    engine.dispose()


PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("first", "change", "hours"),
    [(date(2026, 3, 26), date(2026, 3, 29), 23), (date(2026, 10, 22), date(2026, 10, 25), 25)],
)
def test_daily_periods_tile_across_dst_changes(first: date, change: date, hours: int) -> None:
    """A daily 07:00 Paris digest over 24h: each run is named after 07:00 however late the worker fires, and
    consecutive periods meet exactly, so the day the clocks change covers 23 or 25 hours, not 24 twice."""
    config = DigestConfig(name="matin", recipients=("veille@example.fr",), schedule="0 7 * * *", period_s=86400)
    periods = []
    for offset in range(7):
        day = first + timedelta(days=offset)
        end = scheduled_end(config, datetime.combine(day, time(7, 40), PARIS))  # the worker fired 40 minutes late
        assert end == datetime.combine(day, time(7, 0), PARIS)
        assert scheduled_end(config, end) == end  # on the minute
        day_before = datetime.combine(day - timedelta(days=1), time(7), PARIS)
        assert scheduled_end(config, end - timedelta(seconds=1)) == day_before
        periods.append((period_start(config, end), end))
    for (_, previous_end), (start, _) in pairwise(periods):
        assert start == previous_end  # no gap, no overlap
    lengths = {end.astimezone(PARIS).date(): (end - start) / timedelta(hours=1) for start, end in periods}
    assert lengths.pop(change) == hours and set(lengths.values()) == {24}


def test_runs_are_recorded_with_the_scheduled_period(tmp_path: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path}/periods.db")
    storage.upgrade()
    daily = DigestConfig(name="matin", recipients=("veille@example.fr",), schedule="0 7 * * *", period_s=86400)
    weekdays = DigestConfig(name="semaine", recipients=("veille@example.fr",), schedule="0 7 * * 1-5", period_s=86400)
    digester = Digester(Settings(), storage, [daily, weekdays])
    sunday = scheduled_end(daily, datetime(2026, 3, 29, 5, 40, tzinfo=UTC))
    monday = scheduled_end(weekdays, datetime(2026, 3, 30, 5, 40, tzinfo=UTC))
    assert digester.run("matin", sunday) == "empty" and digester.run("semaine", monday) == "empty"
    with storage.repository() as repo:
        spring, week = repo.digest_runs(states=["empty"])
        assert (spring.period_start, spring.period_end) == (datetime(2026, 3, 28, 6, tzinfo=UTC), sunday)
        # 24h is not the 72 hours since Friday 07:00: the period is the last 24 hours
        assert (week.period_start, week.period_end) == (monday - timedelta(hours=24), monday)
    storage.engine.dispose()


def test_the_next_send_skips_a_repeated_hour() -> None:
    """The preview's next send: 02:30 comes twice on the night the clocks go back, and only the first is a
    run (the second names the period already sent), so from between the two the next send is the next night."""
    nightly = DigestConfig(name="nuit", recipients=("veille@example.fr",), schedule="30 2 * * *")
    assert next_fire(nightly, datetime(2025, 10, 25, 12, 0, tzinfo=UTC)) == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)
    assert next_fire(nightly, datetime(2025, 10, 26, 0, 40, tzinfo=UTC)) == datetime(2025, 10, 27, 1, 30, tzinfo=UTC)
    assert next_fire(nightly, datetime(2026, 12, 1, 9, 0, tzinfo=UTC)) == datetime(2026, 12, 2, 1, 30, tzinfo=UTC)


def test_a_hour_the_clocks_repeat_is_named_once() -> None:
    hourly = DigestConfig(name="heure", recipients=("veille@example.fr",), schedule="0 * * * *", period_s=3600)
    first, repeated = datetime(2026, 10, 25, 0, 0, tzinfo=UTC), datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # 02:00 twice
    assert scheduled_end(hourly, first) == scheduled_end(hourly, repeated) == first
    after = scheduled_end(hourly, datetime(2026, 10, 25, 2, 0, tzinfo=UTC))  # 03:00 CET
    assert period_start(hourly, after) == first  # the repeated hour is in one period, not skipped


def _bulk(storage: Storage, end: datetime) -> dict[str, int]:
    """70,000 articles matching 'satellite' in the period (7,000 one-outlet stories, made in SQL), and four
    stories that test the ranking and the period: returns their ids."""
    match_title, match_text = "Un satellite de plus", "Le satellite Galileo a été lancé depuis Kourou."
    other_title, other_text = "Match reporté", "Le match de football a été reporté à cause de la pluie."
    inside, before = end - timedelta(hours=2), end - timedelta(days=3)
    when = bindparam("inside", inside, type_=StoryRow.first_published_at.type)
    numbers = select(literal(1).label("i")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.i + 1).where(numbers.c.i < 70000))
    story_columns = {
        "id": numbers.c.i,
        "title": literal("Sujet"),
        "first_published_at": when,
        "last_published_at": when,
        "article_count": literal(10),
        "original_count": literal(10),
        "outlet_count": literal(1),
        "centroid": literal({}, StoryRow.centroid.type),
        "created_at": when,
        "updated_at": when,
    }
    article_columns = {
        "id": numbers.c.i,
        "url": literal("https://bulk.example.fr/").concat(cast(numbers.c.i, String)),
        "title": literal(match_title),
        "text": literal(match_text),
        "source": literal("Média 0"),
        "published_at": when,
        "fetched_at": when,
        "story_id": numbers.c.i % 7000 + 1,
        "placement_method": literal("new_story"),
        "terms": literal({"satellit": 1.0}, Article.terms.type),
        "minhash": literal(b"", Article.minhash.type),
        "shingle_count": literal(1),
        "created_at": when,
    }
    special = {"first": 7001, "second": 7002, "no_match": 7003, "match_before": 7004}
    outlets = {7001: 3, 7002: 2, 7003: 5, 7004: 4}
    stories = [
        {
            "id": story,
            "title": f"Sujet {story}",
            "first_published_at": before if story == 7004 else inside,
            "last_published_at": inside,
            "article_count": 2,
            "original_count": 2,
            "outlet_count": count,
            "centroid": {},
            "created_at": inside,
            "updated_at": inside,
        }
        for story, count in outlets.items()
    ]
    rows: list[dict[str, object]] = []
    for story, matching, published in [
        (7001, True, inside),
        (7001, True, inside),
        (7002, True, inside),
        (7002, False, inside),
        (7003, False, inside),
        (7003, False, inside),
        (7004, True, before),  # matches, but before the period
        (7004, False, inside),
    ]:
        number = 70001 + len(rows)
        rows.append(
            {
                "id": number,
                "url": f"https://bulk.example.fr/{number}",
                "title": match_title if matching else other_title,
                "text": match_text if matching else other_text,
                "source": f"Média {number % outlets[story]}",
                "published_at": published,
                "fetched_at": published,
                "story_id": story,
                "placement_method": "new_story",
                "terms": {"satellit": 1.0} if matching else {"match": 1.0},
                "minhash": b"",
                "shingle_count": 1,
                "created_at": published,
            }
        )
    with storage.engine.begin() as db:
        many = select(*story_columns.values()).where(numbers.c.i <= 7000)
        db.execute(insert(StoryRow).from_select(list(story_columns), many))
        db.execute(insert(StoryRow), stories)
        db.execute(insert(Article).from_select(list(article_columns), select(*article_columns.values())))
        db.execute(insert(Article), rows)
        if storage.engine.dialect.name == "sqlite":
            for title, body in ((match_title, match_text), (other_title, other_text)):
                db.execute(
                    text("INSERT INTO article_fts (rowid, body) SELECT id, :body FROM articles WHERE title = :title"),
                    {"body": " ".join(index_terms(f"{title}\n{body}")), "title": title},
                )
    return special


def test_a_watch_query_with_70000_matches_is_answered_in_sql(database_url: str) -> None:
    """More matches than SQLite (32,766) or PostgreSQL (65,535) take as bound parameters."""
    storage = Storage(database_url)
    storage.upgrade()
    end = datetime(2026, 3, 30, 5, 0, tzinfo=UTC)
    ids = _bulk(storage, end)
    config = DigestConfig(
        name="espace", recipients=("veille@example.fr",), schedule="0 7 * * *", query="satellites", min_outlets=2
    )
    digest = build(storage, config, end)
    assert [s.id for s in digest.stories] == [ids["first"], ids["second"]]
    assert [s.outlet_count for s in digest.stories] == [3, 2]
    anything = build(storage, DigestConfig(**{**config.__dict__, "query": None}), end)
    assert [s.id for s in anything.stories] == [ids["no_match"], ids["match_before"], ids["first"], ids["second"]]
    with storage.repository() as repo:
        everywhere = repo.stories_for_digest(
            datetime.min.replace(tzinfo=UTC), end, query=parse_query("satellite"), outlets=(), min_outlets=1, limit=8000
        )
    assert len(everywhere) == 7003 and ids["match_before"] in {s.id for s in everywhere}  # its article, unbounded
    storage.engine.dispose()


@pytest.mark.parametrize("query", ["le la", "!!", '"les" ?'])
def test_a_query_without_a_searchable_word_is_refused_at_start(tmp_path: Path, query: str) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "feeds: []\ndigests:\n"
        f"  - {{name: vide, recipients: [veille@example.fr], schedule: '0 7 * * *', query: {json.dumps(query)}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as refused:
        load_digests(path)
    assert refused.value.digest == "vide" and refused.value.field == "query"
    assert "no searchable word" in str(refused.value)


def test_outlet_filters_ignore_case_and_accents(tmp_path: Path, database_url: str) -> None:
    _settings, storage, config = _setup(tmp_path, database_url, free_port())

    def counts(*outlets: str) -> list[int]:
        digest = build(storage, DigestConfig(**{**config.__dict__, "outlets": outlets}), END)
        return [s.outlet_count for s in digest.stories]

    assert counts("journal 1") == counts("JOURNAL  1") == [2]
    assert counts("MEDIA 000") == counts("média 001") == counts("Agence Réprise") == [5]  # stored "Média 000", …
    assert counts("media 000", "Journal 0") == [5, 2]
    assert counts("media 004") == []  # its story is outside the period
    assert counts("Journal 9") == []


def test_unknown_outlets_are_warned_at_start(caplog: pytest.LogCaptureFixture) -> None:
    feeds = [
        FeedConfig(name="Numérama", url="https://www.numerama.com/feed/", interval_s=900),
        FeedConfig(name="Next (flux)", url="https://next.ink/feed/", interval_s=900, outlet="Next"),
    ]
    to = ("a@example.fr",)
    digests = [
        DigestConfig(name="matin", recipients=to, schedule="0 7 * * *", outlets=("NUMERAMA", "next")),
        DigestConfig(name="soir", recipients=to, schedule="0 19 * * *", outlets=("Numerma", "Next (flux)")),
    ]
    with caplog.at_level("WARNING", logger="monitor.digests"):
        assert warn_unknown_outlets(digests, feeds) == ["Numerma", "Next (flux)"]  # a feed's name is not its outlet
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "digest 'soir', field 'outlets': no feed has the outlet 'Numerma'",
        "digest 'soir', field 'outlets': no feed has the outlet 'Next (flux)'",
    ]


def test_a_sent_digest_records_the_stories_it_carried(tmp_path: Path, database_url: str, smtp) -> None:  # type: ignore[no-untyped-def]
    """digest_run_stories names each story a sent digest carried, at its rank; the desk's read model shows
    it on the story, and a digest that was not sent records nothing."""
    from monitor.desk.read import Desk

    inbox, port = smtp
    settings, storage, config = _setup(tmp_path, database_url, port)
    silent = Settings(**{**settings.model_dump(), "smtp_port": free_port()})  # nobody listens: not sent
    assert Digester(silent, storage, [config]).run("matin", END - timedelta(days=1)) == "pending"
    assert Digester(settings, storage, [config]).run("matin", END) == "sent"
    with connected(database_url) as db:
        rows = db.execute(
            text(
                "SELECT r.period_end, s.story_id, s.rank, st.outlet_count FROM digest_run_stories s "
                "JOIN digest_runs r ON r.id = s.run_id JOIN stories st ON st.id = s.story_id ORDER BY s.rank"
            )
        ).all()
    assert [(rank, outlets) for _end, _story, rank, outlets in rows] == [(1, 5), (2, 2)]  # the e-mail's order
    desk = Desk(database_url)
    detail = desk.story(rows[0][1])
    desk.close()
    assert detail is not None and [(d.digest, d.rank) for d in detail.digests] == [("matin", 1)]
    assert len(inbox.messages) == 1
