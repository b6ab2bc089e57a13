"""Test helpers: the monitor run as a user runs it (CLI, daemon, one cycle), and small corpora."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url

from benchmarks.corpus import RPM2, LoopbackServer, article_page, rss, seeds, text_units
from monitor.config import Settings
from monitor.daemon.report import CycleReport
from monitor.daemon.service import run_once
from monitor.pipeline.placement import BATCH, Ingestor
from monitor.pipeline.prepare import Incoming


def loopback_env(database_url: str, feeds_file: Path, **settings: str) -> dict[str, str]:
    """The environment of a `monitor` process that fetches from loopback test servers; more MONITOR_*
    settings as keywords (host_min_interval="0" sets MONITOR_HOST_MIN_INTERVAL)."""
    return {
        **os.environ,
        "MONITOR_DATABASE_URL": database_url,
        "MONITOR_FEEDS_FILE": str(feeds_file),
        "MONITOR_ALLOW_PRIVATE_ADDRESSES": "127.0.0.0/8",
        **{f"MONITOR_{name.upper()}": value for name, value in settings.items()},
    }


@dataclass
class Daemon:
    process: subprocess.Popen[str]
    stderr: str = ""  # filled once it has stopped


# `monitor run` on a clock set ahead of the wall clock: what the command does, with run_forever's offset
_RUN_AHEAD = (
    "import asyncio, sys; from datetime import timedelta; from monitor.config import Settings; "
    "from monitor.daemon.service import run_forever; from monitor.ops.logs import configure_logging; "
    "settings = Settings(); configure_logging(settings.log_level, settings.log_format); "
    "asyncio.run(run_forever(settings, clock_offset=timedelta(seconds=float(sys.argv[1]))))"
)


# `monitor run` reaches its scheduler in 1.5 s on an idle machine, 5 s and more beside other test runs; one that
# starts later than this fires a minute later (the test still passes, 60 s slower)
DAEMON_START_UP_S = 8.0


def minute_soon(seconds: float = DAEMON_START_UP_S) -> timedelta:
    """The clock offset at which a cron minute begins ``seconds`` from now: daemons set to it fire their
    every-minute schedules then, together, not at the next minute of the wall clock."""
    return timedelta(seconds=-(time.time() + seconds) % 60)


@contextmanager
def running_daemon(env: dict[str, str], clock_offset: timedelta | None = None) -> Iterator[Daemon]:
    """`monitor run` in a subprocess, stopped with SIGTERM on leaving; its stderr is kept for asserts. With
    ``clock_offset``, its cron jobs read a clock that far ahead (see ``minute_soon``)."""
    command = ["-m", "monitor", "run"]
    if clock_offset is not None:
        command = ["-c", _RUN_AHEAD, str(clock_offset.total_seconds())]
    process = subprocess.Popen(
        [sys.executable, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    daemon = Daemon(process)
    try:
        yield daemon
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            daemon.stderr = process.communicate(timeout=20)[1]
        finally:
            if process.poll() is None:
                process.kill()


def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step_s)
    return True


def labelled_incoming(row: dict[str, str]) -> Incoming:
    """A line of a labelled JSONL as it arrives."""
    return Incoming(
        url=row["url"],
        fetched_at=datetime.now(UTC),
        title=row["title"],
        text=row["text"],
        published_at=datetime.fromisoformat(row["published_at"]),
        source=row["source"],
    )


def place_online(ingestor: Ingestor, path: Path) -> None:
    """Every line of a labelled JSONL placed on its own, as a live stream would (no merge pass after)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        ingestor.ingest(labelled_incoming(json.loads(line)))


def place_in_batches(ingestor: Ingestor, articles: Path | list[Incoming]) -> None:
    """Articles (or every line of a labelled JSONL) placed in the batches a busy worker places, in order
    (no merge pass after)."""
    if isinstance(articles, Path):
        articles = [labelled_incoming(json.loads(line)) for line in articles.read_text(encoding="utf-8").splitlines()]
    for start in range(0, len(articles), BATCH):
        ingestor.store_many([ingestor.prepare(incoming) for incoming in articles[start : start + BATCH]])


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], Any]) -> Any:
    """What ``make(directory)`` returns (JSON), made by the first test process that asks and read back by
    the others: the processes of one run share the parent of their temporary directories. Alone, this
    process makes it."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return make(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent / name
    shared.mkdir(exist_ok=True)
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        made = shared / "made.json"
        if not made.exists():
            made.write_text(json.dumps(make(shared)), encoding="utf-8")
        return json.loads(made.read_text(encoding="utf-8"))


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` added to this process's environment while inside, as a new process would start with it."""
    saved = os.environ.copy()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`monitor ARGS` through the command's own entry point, in this process: the same parsing, settings,
    output and exit code, without the second of imports a new process spends. What needs a process of its
    own (signals, a crash, start-up itself) goes through `run_process`."""
    from monitor import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved_logging = root.handlers[:], root.level
    consoles = {console: console.width for console in (cli.console, cli.errors)}
    try:
        with environment(env), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            for console in consoles:  # a new process's consoles read COLUMNS as it starts
                console.width = int(os.environ.get("COLUMNS", consoles[console]))
            cli.main(list(args))
        code: int | str | None = 0
    except SystemExit as e:
        code = e.code
    finally:
        root.handlers[:], level = saved_logging
        root.setLevel(level)
        for console, width in consoles.items():
            console.width = width
    if isinstance(code, str):
        stderr.write(code + "\n")
    returncode = 1 if isinstance(code, str) else code or 0
    return subprocess.CompletedProcess(["monitor", *args], returncode, stdout.getvalue(), stderr.getvalue())


def run_process(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`monitor ARGS` in a process of its own, as a user starts it."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


FAST = {
    "allow_private_addresses": "127.0.0.0/8",
    "host_min_interval": 0.0,
    "read_timeout": 1.5,
    "connect_timeout": 1.5,
    "request_deadline": 3.0,
    "max_body_bytes": 1_000_000,
}


def write_feeds(path: Path, feeds: dict[str, str], extra: str = "") -> Path:
    lines = ["feeds:"] + [f'  - {{name: "{name}", url: "{url}"{extra}}}' for name, url in feeds.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cycle(database_url: str, feeds_file: Path, **overrides: object) -> CycleReport:
    settings = Settings(database_url=database_url, feeds_file=feeds_file, **{**FAST, **overrides})  # type: ignore[arg-type]
    return asyncio.run(asyncio.wait_for(run_once(settings), timeout=90))


@contextmanager
def connected(database_url: str, *, write: bool = False) -> Iterator[Connection]:
    """One connection to a test's database for several statements (in a transaction, committed, when
    ``write``); its engine is disposed after, so that no connection outlives the test."""
    engine = create_engine(database_url)
    try:
        with engine.begin() if write else engine.connect() as db:
            yield db
    finally:
        engine.dispose()


def query(database_url: str, sql: str) -> list:  # type: ignore[type-arg]
    with connected(database_url) as db:
        return list(db.execute(text(sql)).mappings())


def good_site(server: LoopbackServer, seed_index: int = 0, path: str = "/good.xml") -> str:
    seed = seeds()[seed_index]
    page = server.add(
        f"/article-{seed.name}.html",
        article_page(
            title=seed.title,
            body=seed.body,
            site="Bon site",
            url=f"{server.base}/article-{seed.name}.html",
            published=seed.published,
        ),
    )
    item = {"title": seed.title, "link": page, "published": datetime.now(UTC) - timedelta(hours=1)}
    return server.add(path, rss("Bon flux", server.base, [item]), "application/rss+xml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def digest_corpus(tmp_path: Path) -> Path:
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


def write_seeds(path: Path, *, same_day: bool, extra_lines: list[str] | None = None) -> None:
    lines = []
    for seed in seeds():
        day = "2024-11-05" if same_day else seed.published
        lines.append(
            json.dumps(
                {
                    "url": f"https://outlet-{seed.name}.example.fr/article?utm_campaign=x",
                    "title": seed.title,
                    "text": seed.body,
                    "published_at": f"{day}T10:00:00+01:00",
                    "source": f"outlet-{seed.name}",
                    "story": "never read by the product",
                }
            )
        )
    lines[2:2] = extra_lines or []
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def stories_of(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    with engine.connect() as db:
        rows = db.execute(text("SELECT source, story_id FROM articles")).all()
    engine.dispose()
    return {source.removeprefix("outlet-"): story for source, story in rows}


XSS_TITLE = "<script>alert(1)</script> Tibet"


def seeded_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a `monitor` process on a database ``seed_database`` filled (or a copy of one):
    a feeds.yaml with one feed and one digest, nothing else of the caller's MONITOR_* settings."""
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(
        "feeds:\n  - {name: Exemple, url: 'https://www.example.fr/feed/', tags: [tech]}\n"
        "digests:\n  - {name: matin, recipients: [veille@example.fr], schedule: '0 7 * * *'}\n",
        encoding="utf-8",
    )
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")},
        "MONITOR_DATABASE_URL": database_url,
        "MONITOR_FEEDS_FILE": str(feeds),
        "COLUMNS": "200",
    }


def seed_database(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The five seeds at their own dates (stories {000-003} and {004}) plus a story titled with a script tag,
    imported through the real CLI; the environment of a `monitor` process reading it. Tests that only need
    the result take a copy (the ``seeded_database`` and ``seeded_desk`` fixtures)."""
    archive = tmp_path / "seeds.jsonl"
    write_seeds(archive, same_day=False)
    other = json.loads(RPM2.read_text(encoding="utf-8").splitlines()[0])
    line = {
        "url": "https://hostile.example.fr/a",
        "title": XSS_TITLE,
        "text": other["text"],
        "published_at": "2024-11-06T08:00:00+01:00",
        "source": "Hostile",
    }
    with archive.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")
    env = seeded_env(database_url, tmp_path)
    result = run_cli("import", str(archive), env=env)
    assert result.returncode == 0 and "6 articles added" in result.stdout, result.stdout + result.stderr
    return env


@contextmanager
def serving(env: dict[str, str], token: str | None = None) -> Iterator[str]:
    """The analyst's desk on a free loopback port, served as `monitor run` serves it (``WebServer``: uvicorn
    on a thread) in this process; its base URL once it answers. What `monitor web` itself does (binding,
    refusals, signals) is tested on the command."""
    from monitor.web import WebServer

    with environment({**env, **({"MONITOR_WEB_TOKEN": token} if token else {})}):
        settings = Settings()
    port = free_port()
    server = WebServer(settings, "127.0.0.1", port)
    server.start()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def answering() -> bool:
        assert server.thread.is_alive(), "the desk stopped"
        try:
            return httpx.get(f"{base}/api/feeds", headers=headers, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        assert wait_until(answering, timeout_s=60, step_s=0.05), "the desk did not answer"
        yield base
    finally:
        server.stop()


CHROMIUM = Path("/usr/bin/chromium")  # Debian's: apt-get install -y chromium


def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a throwaway profile, with nothing that reaches outside (updates, sync, QUIC)."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


POSTGRES_ADMIN = os.environ.get("MONITOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """A database of its own, empty or a copy of ``template`` (which nobody may be connected to)."""
    name = f"monitor_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is required for the tests ({POSTGRES_ADMIN}): {e}")
    # From PostgreSQL 15, a copy by files, not through the WAL (its default): 35 ms of the server's CPU to
    # make and drop, against 48, for each of the 200 databases a run makes. Older servers copy by files.
    by_files = " STRATEGY FILE_COPY" if admin.info.server_version >= 150000 else ""
    copy = f' TEMPLATE "{template}"{by_files}' if template else ""
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"{copy}')
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def own_database(engine: str, directory: Path, template: str | None = None) -> Iterator[str]:
    """A database of its own on ``engine``, empty or a copy of the closed database at ``template``."""
    if engine == "postgresql":
        with postgres_database(template and make_url(template).database) as url:
            yield url
        return
    path = directory / "monitor.db"
    if template:
        source = Path(make_url(template).database or "")
        assert not source.with_name(f"{source.name}-wal").exists(), "the template is still open"
        shutil.copyfile(source, path)
    yield f"sqlite:///{path}"


COPIER = "Agence Reprise"
# Two dispatches written for these tests, on subjects nothing else in the data covers: stories of their own.
RAIL = (
    "Grève des aiguilleurs : le trafic ferroviaire perturbé en Bretagne",
    "Les aiguilleurs du réseau ferré breton ont cessé le travail lundi matin à l'appel de trois syndicats, qui "
    "réclament des embauches et une prime de nuit. Entre Rennes et Brest, un train régional sur trois circulait, "
    "et les correspondances vers Quimper ont été supprimées jusqu'au soir. La direction régionale promet une "
    "table ronde jeudi avec les représentants des agents de circulation.",
)
MUSEUM = (
    "Le musée des Beaux-Arts de Lyon rouvre après deux ans de travaux",
    "Fermé depuis deux ans pour la rénovation de ses toitures et de ses réserves, le musée des Beaux-Arts de Lyon "
    "rouvre ses salles au public samedi. Les conservateurs ont profité du chantier pour restaurer une trentaine de "
    "tableaux flamands et réaccrocher les sculptures du cloître. L'entrée restera gratuite pendant le premier "
    "week-end, annonce la mairie.",
)


def recent_articles(now: datetime) -> list[dict[str, str]]:
    """Four stories dated back from ``now``, so that each period keeps a different set (``story`` names them):
    ``today``, seeds 000-003 five to two hours ago; ``yesterday``, a dispatch 30 hours ago; ``this_week``,
    another 4 days ago; ``weeks_ago``, seed 004 sixteen days ago (more than the 14 days a story may span
    before ``today``, which it joins when closer: they share Meta, Llama and Nick Clegg) and an hour later its
    near-copy by another outlet, the same text with one sentence cut."""

    def line(url: str, title: str, body: str, hours: int, source: str, story: str) -> dict[str, str]:
        published = (now - timedelta(hours=hours)).isoformat(timespec="seconds")
        return {"url": url, "title": title, "text": body, "published_at": published, "source": source, "story": story}

    meta = seeds()
    lines = [
        line(f"https://outlet-{s.name}.example.fr/article", s.title, s.body, hours, f"outlet-{s.name}", "today")
        for s, hours in zip(meta[:4], (5, 4, 3, 2), strict=True)
    ]
    lines.append(line("https://rail.example.fr/greve", *RAIL, 30, "Ouest Rail", "yesterday"))
    lines.append(line("https://musee.example.fr/reouverture", *MUSEUM, 96, "Lyon Culture", "this_week"))
    llama2 = meta[4]
    lines.append(
        line("https://outlet-004.example.fr/article", llama2.title, llama2.body, 384, "outlet-004", "weeks_ago")
    )
    units = text_units(llama2.body)
    cut = "\n".join(units[:3] + units[4:])
    lines.append(line("https://reprise.example.fr/depeche", f"{llama2.title} (dépêche)", cut, 383, COPIER, "weeks_ago"))
    return lines
