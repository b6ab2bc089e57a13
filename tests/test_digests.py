"""Digest e-mails through a real SMTP server on loopback, from articles ingested by the normal pipeline."""

from __future__ import annotations

import email
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from html import unescape
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text

from monitor.config import DigestConfig, Settings
from monitor.digests import Digester, build, render
from monitor.importing import import_file
from monitor.ingest import Ingestor
from monitor.storage import Storage
from tests.support import RPM2, loopback_env, running_daemon, seeds, wait_until

END = datetime(2024, 11, 7, 6, 0, tzinfo=UTC)  # 07:00 in Paris


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.original_content, policy=default_policy))  # type: ignore[arg-type]
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def _corpus(tmp_path: Path) -> Path:
    """The seeds at their own dates, a wire reprint of 001 by another outlet, and two articles of another story."""
    lines = []
    for seed in seeds():
        lines.append(
            {
                "url": f"https://outlet-{seed.name}.example.fr/{seed.name}",
                "title": seed.title,
                "text": seed.body,
                "published_at": f"{seed.published}T10:00:00+01:00",
                "source": f"Média {seed.name}",
            }
        )
    copy = seeds()[1]
    lines.append(
        {
            "url": "https://reprise.example.fr/depeche",
            "title": "Meta ouvre Llama aux militaires (dépêche)",
            "text": copy.body,
            "published_at": "2024-11-05T15:00:00+01:00",
            "source": "Agence Reprise",
        }
    )
    rpm2 = [json.loads(line) for line in RPM2.read_text(encoding="utf-8").splitlines()[:40] if line.strip()]
    other = [r for r in rpm2 if r["story"] == rpm2[0]["story"]][:2]
    for n, row in enumerate(other):
        lines.append(
            {
                "url": row["url"],
                "title": row["title"],
                "text": row["text"],
                "published_at": f"2024-11-06T0{8 + n}:00:00+01:00",
                "source": f"Journal {n}",
            }
        )
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n", encoding="utf-8")
    return path


def _setup(tmp_path: Path, database_url: str, port: int, **digest: object) -> tuple[Settings, Storage, DigestConfig]:
    storage = Storage(database_url)
    storage.upgrade()
    report = import_file(_corpus(tmp_path), Ingestor(storage))
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

    engine = create_engine(database_url)
    with engine.connect() as db:
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
    engine.dispose()
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
    engine = create_engine(database_url)
    with engine.connect() as db:
        runs = db.execute(text("SELECT state, attempts, message_id FROM digest_runs")).mappings().all()
    engine.dispose()
    assert len(runs) == 1 and runs[0]["state"] == "sent" and runs[0]["attempts"] == 1
    assert runs[0]["message_id"] == str(inbox.messages[0]["Message-ID"]).strip()


def test_failed_delivery_is_retried_then_reported(tmp_path: Path, smtp) -> None:  # type: ignore[no-untyped-def]
    inbox, port = smtp
    database_url = f"sqlite:///{tmp_path}/retry.db"
    settings, storage, config = _setup(tmp_path, database_url, _free_port())  # nobody listens there
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

    from tests.support import LoopbackServer, rss

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
        with running_daemon(env) as daemon:
            wait_until(lambda: bool(inbox.messages), timeout_s=80)
    assert len(inbox.messages) == 1, daemon.stderr
    assert inbox.messages[0]["Subject"].startswith("Veille « minute »")
    assert daemon.process.returncode == 0


def test_cli_preview_send_and_user_templates(tmp_path: Path, smtp) -> None:  # type: ignore[no-untyped-def]
    from tests.test_pipeline import run_cli

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
    assert run_cli("import", str(_corpus(tmp_path)), env=env).returncode == 0
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
