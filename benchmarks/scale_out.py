"""Scale-out: trafilatura alone, one `monitor run --once`, and two at once on one PostgreSQL, on 2,000 pages.

    .venv/bin/python benchmarks/scale_out.py [--postgres postgresql://postgres@127.0.0.1:5432/test]

The pages are real French text (rpm2-dev and the seeds), about ten variants of each article: another 60 % of
its paragraphs (or sentences) in a rotated order, interleaved with a few paragraphs of an article on another
topic, under a unique headline, inside an outlet page (benchmarks.corpus.article_page). 20 loopback hosts
(127.0.2.1-20) each serve about 100 of them, one RSS feed listing them and a robots.txt, from threads of this
process: on a small machine the servers take CPU from the workers (reported with each run).

1. trafilatura alone: `monitor.extraction.extract` over the same HTML strings, in this process, no HTTP.
2. one worker: `monitor run --once` on a fresh PostgreSQL database.
3. two workers: two `monitor run --once` started together on another fresh database; they share the feeds and
   items through leases (FOR UPDATE SKIP LOCKED). Wall clock until both have exited.
4. two daemons: two `monitor run` (MONITOR_POLL_SECONDS=1) started together on a third database, SIGTERM once
   every feed item is settled; wall clock until then. (A `--once` worker that finds nothing to claim at its
   start exits, so the pair in 3 may not share at all; daemons keep claiming.)
Every worker figure is the wall clock of the real CLI, interpreter start-up, schema migration and the merge pass
a `--once` run ends with included; each database is checked: every article stored once, every feed item done.
Each run's stories are also scored against the gold stories of the articles the pages are variants of (BCubed).
The variants are harder than coverage: rotated paragraphs put background dates in the lead, where the event
date is read, and a third of another topic in the body. A figure to watch, not the quality gate
(benchmarks/story_quality.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

from benchmarks.common import machine, postgres_database  # noqa: E402
from benchmarks.corpus import RPM2, SEEDS, LoopbackServer, article_page, rss, seed_title, text_units  # noqa: E402
from monitor.errors import ExtractionError  # noqa: E402
from monitor.evaluation import Scores, score  # noqa: E402
from monitor.extraction import extract  # noqa: E402
from monitor.fetch.urls import canonical_url  # noqa: E402

HOSTS = [f"127.0.2.{i}" for i in range(1, 21)]
ARTICLES = 2000
KEEP = 0.6  # share of an article's paragraphs a variant keeps
MIX = 0.35  # paragraphs of another article, relative to the ones kept
TIMEOUT_S = 900.0
RUBRICS = [
    "",
    "Analyse",
    "Décryptage",
    "Le point",
    "En bref",
    "Ce qu'il faut retenir",
    "Revue de presse",
    "Éclairage",
    "Les faits",
    "Zoom",
    "Contexte",
    "Chronologie",
]
ENV = {
    "MONITOR_ALLOW_PRIVATE_ADDRESSES": "127.0.0.0/8",
    "MONITOR_HOST_MIN_INTERVAL": "0",
    "MONITOR_HOST_CONCURRENCY": "4",
    "MONITOR_GLOBAL_CONCURRENCY": "32",
    "MONITOR_MAX_ITEMS_PER_FEED": "1000",
    "MONITOR_LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class Source:
    """One real article: the material its variants are cut from."""

    key: str
    topic: str
    story: str  # its gold story label (rpm2-dev's topic and period; the seeds' labels)
    title: str
    units: list[str]  # paragraphs, or sentences when the article has few paragraphs
    published: datetime


@dataclass(frozen=True)
class Page:
    host: int
    path: str
    url: str
    title: str
    published: datetime
    html: str
    story: str  # the gold story of the article it is a variant of


@dataclass(frozen=True)
class Child:
    seconds: float  # from the common launch to this process's exit
    summary: str  # what it says it did
    max_rss_kib: int
    cpu_s: float


@dataclass(frozen=True)
class Batch:
    seconds: float  # launch to the last exit
    children: list[Child]
    first_request_s: float  # launch to the first request the servers saw
    self_cpu_s: float  # this process (the HTTP servers) during the batch
    machine_busy_s: float  # all cores, from /proc/stat
    postgres_cpu_s: float | None  # the local PostgreSQL server's processes, from /proc; None if not found


@dataclass(frozen=True)
class Stored:
    articles: int
    distinct_urls: int
    methods: dict[str, int]
    stories: int
    items: dict[str, int]
    items_with_article: int
    distinct_item_articles: int
    story_of: dict[str, int]  # article URL -> story


def sources() -> list[Source]:
    """The 200 rpm2-dev articles and the five seeds."""
    found = []
    for line in RPM2.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            found.append(
                Source(
                    row["url"],
                    row["topic"],
                    row["story"],
                    row["title"],
                    text_units(row["text"]),
                    datetime.fromisoformat(row["published_at"]),
                )
            )
    labels = json.loads((SEEDS / "labels.json").read_text(encoding="utf-8"))["articles"]
    for path in sorted(SEEDS.glob("*.txt")):
        body = path.read_text(encoding="utf-8").strip()
        published = datetime.fromisoformat(labels[path.name]["published"] + "T09:30:00+01:00")
        label = labels[path.name]["story"]
        found.append(Source(path.name, "seeds", label, seed_title(body), text_units(body), published))
    return found


def variant(source: Source, k: int, others: list[Source]) -> tuple[str, str, datetime]:
    """Title, body and date of variant k: its own 60 % of the units, rotated, with another topic's paragraphs."""
    rng = random.Random(f"{source.key}/{k}")
    n = len(source.units)
    keep = sorted(rng.sample(range(n), max(3, min(n, round(KEEP * n)))))
    turn = rng.randrange(len(keep))
    own = [source.units[i] for i in keep[turn:] + keep[:turn]]
    other = rng.choice([o for o in others if o.topic != source.topic])
    count = min(len(other.units), max(2, round(MIX * len(own))))
    start = rng.randrange(len(other.units) - count + 1)
    mixed = other.units[start : start + count]
    step = max(1, len(own) // count)
    body: list[str] = []
    for i, unit in enumerate(own):
        body.append(unit)
        if (i + 1) % step == 0 and mixed:
            body.append(mixed.pop(0))
    body.extend(mixed)
    title = f"{RUBRICS[k]} : {source.title}" if RUBRICS[k] else source.title
    published = source.published + timedelta(hours=6 * k, minutes=rng.randrange(60))
    return title, "\n".join(body), published


def build_pages(servers: list[LoopbackServer], count: int) -> list[Page]:
    """`count` article pages, variant-major (every article's variant 0 first), spread over the hosts."""
    material = sources()
    per_source = math.ceil(count / len(material))
    if per_source > len(RUBRICS):
        raise SystemExit(f"{count} articles need {per_source} variants of each text; RUBRICS has {len(RUBRICS)}")
    pages: list[Page] = []
    titles: set[str] = set()
    for k in range(per_source):
        for source in material:
            if len(pages) == count:
                break
            title, body, published = variant(source, k, material)
            if title in titles:
                title = f"{title} ({len(pages)})"
            titles.add(title)
            h = len(pages) % len(servers)
            server, path = servers[h], f"/actualites/{len(pages):04d}.html"
            page = article_page(
                title=title,
                body=body,
                site=f"Média {h + 1:02d}",
                url=server.base + path,
                published=published.date().isoformat(),
            )
            pages.append(Page(h, path, server.base + path, title, published, page, source.story))
    return pages


def publish(servers: list[LoopbackServer], pages: list[Page], feeds_file: Path) -> None:
    """Pages, one RSS feed and a robots.txt per host; feeds.yaml listing the feeds."""
    items: dict[int, list[dict[str, Any]]] = {h: [] for h in range(len(servers))}
    for page in pages:
        servers[page.host].add(page.path, page.html)
        items[page.host].append({"title": page.title, "link": page.url, "published": page.published})
    lines = ["feeds:"]
    for h, server in enumerate(servers):
        server.add("/robots.txt", "User-agent: *\nAllow: /\n", "text/plain; charset=utf-8")
        site = f"Média {h + 1:02d}"
        link = server.add("/rss.xml", rss(site, server.base, items[h]), "application/rss+xml; charset=utf-8")
        lines.append(f'  - {{name: "{site}", url: "{link}"}}')
    feeds_file.write_text("\n".join(lines) + "\n", encoding="utf-8")


def trafilatura_alone(pages: list[Page]) -> tuple[float, int, float]:
    """Seconds to extract every page in this process, pages that gave no article, and the CPU seconds other
    processes used meanwhile (a busy machine slows this figure down)."""
    extract(pages[0].html, pages[0].url)  # imports and caches warm, outside the clock
    failed = 0
    busy, mine = _busy_seconds(), time.process_time()
    start = time.perf_counter()
    for page in pages:
        try:
            extract(page.html, page.url)
        except ExtractionError:
            failed += 1
    seconds = time.perf_counter() - start
    others = max(0.0, _busy_seconds() - busy - (time.process_time() - mine))
    return seconds, failed, others


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, all processes), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text(encoding="utf-8").split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _postgres_cpu_seconds() -> float | None:
    """CPU seconds of the local PostgreSQL server: its live processes, plus what the postmaster has reaped."""
    stats: dict[int, tuple[str, int, list[int]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text(encoding="utf-8")
        except OSError:
            continue  # exited meanwhile
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()  # fields[0] is the state, fields[1] the parent
        stats[int(entry.name)] = (comm, int(fields[1]), [int(v) for v in fields[11:15]])  # utime stime cutime cstime
    ticks = 0
    found = False
    for comm, parent, (utime, stime, cutime, cstime) in stats.values():
        if comm != "postgres":
            continue
        found = True
        ticks += utime + stime
        if stats.get(parent, ("",))[0] != "postgres":  # the postmaster: its exited backends count here
            ticks += cutime + cstime
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def run_workers(
    count: int,
    env: dict[str, str],
    workdir: Path,
    servers: list[LoopbackServer],
    done: Callable[[], bool] | None = None,
) -> Batch:
    """`count` workers launched together, with no inherited MONITOR_* or proxy variables: `monitor run --once`,
    or with `done`, `monitor run` daemons stopped (SIGTERM) as soon as done() is true, which ends the wall clock.
    Each child's exit time, peak RSS and CPU."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_") and not k.lower().endswith("_proxy")}
    command = [sys.executable, "-m", "monitor", "run", *([] if done else ["--once"])]
    for server in servers:
        with server.lock:
            server.requests.clear()
            server.starts.clear()
    ports = [_free_port() for _ in range(count)] if done else []
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[int, tuple[float, int, resource.struct_rusage]] = {}
    handles = []
    busy, postgres = _busy_seconds(), _postgres_cpu_seconds()
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    for i in range(count):
        out = (workdir / f"stdout-{i}.txt").open("w")
        err = (workdir / f"stderr-{i}.txt").open("w")
        handles += [out, err]
        metrics = {"MONITOR_HTTP_PORT": str(ports[i])} if ports else {}  # a daemon's counters: its share
        procs.append(subprocess.Popen(command, env={**base, **env, **metrics}, cwd=workdir, stdout=out, stderr=err))

    def reap(i: int, proc: subprocess.Popen[bytes]) -> None:
        _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        results[i] = (time.monotonic() - start, status, usage)

    def kill_all() -> None:
        for proc in procs:
            proc.kill()

    waiters = [threading.Thread(target=reap, args=(i, proc)) for i, proc in enumerate(procs)]
    timer = threading.Timer(TIMEOUT_S, kill_all)
    timer.start()
    for waiter in waiters:
        waiter.start()
    finished, shares = None, [""] * count
    while done is not None and finished is None and any(waiter.is_alive() for waiter in waiters):
        time.sleep(0.25)
        if done():
            finished = time.monotonic() - start
            shares = [_articles_added(port) for port in ports]
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
    for waiter in waiters:
        waiter.join()
    timer.cancel()
    seconds = finished if finished is not None else time.monotonic() - start
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.5)  # the workers' PostgreSQL backends exit after them
    busy = _busy_seconds() - busy
    postgres_now = _postgres_cpu_seconds()
    postgres = postgres_now - postgres if postgres is not None and postgres_now is not None else None
    for handle in handles:
        handle.close()
    children = []
    for i, proc in enumerate(procs):
        moment, status, usage = results[i]
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            tail = (workdir / f"stderr-{i}.txt").read_text(encoding="utf-8", errors="replace")[-2000:]
            raise SystemExit(f"worker {i + 1} of {count} exited {proc.returncode} after {moment:.1f} s:\n{tail}")
        summary = shares[i] or (workdir / f"stdout-{i}.txt").read_text(encoding="utf-8").strip()
        children.append(Child(moment, summary, usage.ru_maxrss, usage.ru_utime + usage.ru_stime))
    first = min((t for server in servers for t in server.starts), default=start) - start
    self_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    return Batch(seconds, children, first, self_cpu, busy, postgres)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _articles_added(port: int) -> str:
    """What a daemon says it added, from its /metrics (monitor_articles_ingested_total, all methods)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode("utf-8")
    except OSError as e:
        return f"/metrics unreadable: {e}"
    added = sum(float(n) for n in re.findall(r"^monitor_articles_ingested_total\{[^}]*\} (\S+)$", body, re.M))
    return f"{added:.0f} articles added (its /metrics when all were done)"


@contextmanager
def settled(database_url: str, expected: int) -> Iterator[Callable[[], bool]]:
    """A check that every one of the `expected` feed items is settled (no longer pending)."""
    engine = create_engine(database_url)

    def check() -> bool:
        try:
            with engine.connect() as db:
                count = db.execute(text("SELECT COUNT(*) FROM feed_items WHERE state <> 'pending'")).scalar_one()
        except SQLAlchemyError:
            return False  # schema not created yet
        return int(count) >= expected

    try:
        yield check
    finally:
        engine.dispose()


def stored(database_url: str) -> Stored:
    """What a run left in the database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            articles, urls = db.execute(text("SELECT COUNT(*), COUNT(DISTINCT url) FROM articles")).one()
            methods = db.execute(text("SELECT placement_method, COUNT(*) FROM articles GROUP BY 1")).all()
            stories = db.execute(text("SELECT COUNT(*) FROM stories WHERE article_count > 0")).scalar_one()
            items = db.execute(text("SELECT state, COUNT(*) FROM feed_items GROUP BY 1")).all()
            linked, distinct = db.execute(
                text("SELECT COUNT(article_id), COUNT(DISTINCT article_id) FROM feed_items")
            ).one()
            rows = db.execute(text("SELECT url, story_id FROM articles")).all()
            story_of = {str(url): int(story) for url, story in rows}
    finally:
        engine.dispose()
    return Stored(
        int(articles),
        int(urls),
        {str(k): int(v) for k, v in methods},
        int(stories),
        {str(k): int(v) for k, v in items},
        int(linked),
        int(distinct),
        story_of,
    )


def check(db: Stored, expected: int) -> str:
    """'OK' or what is wrong: every article stored once, every feed item done and linked to its own article."""
    problems = []
    if db.articles != expected:
        problems.append(f"{db.articles} articles, expected {expected}")
    if db.distinct_urls != db.articles:
        problems.append(f"{db.articles - db.distinct_urls} duplicate URLs")
    if db.items != {"done": expected}:
        problems.append(f"feed items {db.items}, expected done {expected}")
    if db.items_with_article != expected or db.distinct_item_articles != expected:
        problems.append(f"{db.items_with_article} items linked to {db.distinct_item_articles} distinct articles")
    return "OK" if not problems else "MISMATCH: " + "; ".join(problems)


def grouping(db: Stored, gold: dict[str, str]) -> Scores:
    """The run's stories against the gold stories of the articles the pages are variants of."""
    found = {url: story for url, story in db.story_of.items() if url in gold}
    return score(found, {url: gold[url] for url in found})


def report(label: str, batch: Batch, db: Stored, expected: int, gold: dict[str, str]) -> float:
    """Print one run; returns its articles/s."""
    rate = expected / batch.seconds
    methods = ", ".join(f"{m} {n}" for m, n in sorted(db.methods.items()))
    near = db.methods.get("near_copy", 0)
    print(f"  {label}: {batch.seconds:.1f} s wall, {rate:.1f} articles/s")
    for i, child in enumerate(batch.children, 1):
        print(
            f"    worker {i}: exit at {child.seconds:6.1f} s, peak RSS {child.max_rss_kib / 1024:4.0f} MiB, "
            f"CPU {child.cpu_s:6.1f} s ({child.cpu_s / child.seconds:4.0%} of one core); {child.summary}"
        )
    print(f"    first request served {batch.first_request_s:.1f} s after launch (start-up, migration, feed sync)")
    workers = sum(c.cpu_s for c in batch.children)
    cores = len(os.sched_getaffinity(0))
    postgres = "not local" if batch.postgres_cpu_s is None else f"{batch.postgres_cpu_s:.1f} s"
    others = max(0.0, batch.machine_busy_s - workers - batch.self_cpu_s - (batch.postgres_cpu_s or 0.0))
    print(
        f"    machine CPU busy {batch.machine_busy_s:.1f} s of {cores * batch.seconds:.1f} s ({cores} cores × wall): "
        f"workers {workers:.1f} s, PostgreSQL {postgres}, HTTP servers (this process) {batch.self_cpu_s:.1f} s, "
        f"other processes {others:.1f} s"
    )
    print(
        f"    DB: articles {db.articles} ({methods}); near_copy {near / max(1, db.articles):.1%}; stories {db.stories}"
    )
    print(f"    DB: feed items {db.items}; check: {check(db, expected)}")
    quality = grouping(db, gold)
    print(
        f"    grouping against the sources' gold stories: BCubed F1 {quality.bcubed_f1:.3f} "
        f"(P {quality.bcubed_precision:.3f}, R {quality.bcubed_recall:.3f}), "
        f"{quality.predicted_stories} stories for {quality.gold_stories} gold"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="server for the throwaway databases (default %(default)s)",
    )
    parser.add_argument("--articles", type=int, default=ARTICLES, help="pages to build (default %(default)s)")
    parser.add_argument(
        "--extract-processes",
        type=int,
        default=0,
        help="MONITOR_EXTRACT_PROCESSES for every worker (default %(default)s: extraction in a thread)",
    )
    args = parser.parse_args()
    machine()
    print(
        f"note: the {len(HOSTS)} HTTP servers ({HOSTS[0]}-{HOSTS[-1]}) and PostgreSQL run on the same cores as "
        "the workers; their CPU is shown with each run"
    )
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        servers = [LoopbackServer(host) for host in HOSTS]  # bound now (the URLs need the ports), started later
        pages = build_pages(servers, args.articles)
        gold = {str(canonical_url(page.url)): page.story for page in pages}  # the pages are well formed
        print(
            f"corpus: {len(pages)} pages from {len(sources())} real articles, {len(pages) // len(HOSTS)} per host, "
            f"mean page {sum(len(p.html) for p in pages) / len(pages) / 1024:.1f} KiB"
        )
        seconds, failed, others = trafilatura_alone(pages)
        alone = len(pages) / seconds
        print(
            f"  trafilatura alone (monitor.extraction.extract, in-process, no HTTP): {seconds:.1f} s, "
            f"{alone:.1f} articles/s, {failed} pages without article; other processes used {others:.1f} s CPU meanwhile"
        )
        feeds_file = workdir / "feeds.yaml"
        publish(servers, pages, feeds_file)
        for server in servers:
            stack.enter_context(server)
        runs = [
            ("one", "one worker: `monitor run --once`", 1, False),
            ("two", "two workers: `monitor run --once` ×2, started together, one database", 2, False),
            (
                "daemons",
                "two daemons: `monitor run` ×2 (POLL_SECONDS=1) started together, stopped when all are done",
                2,
                True,
            ),
        ]
        rates: dict[str, float] = {}
        story_counts: dict[str, int] = {}
        for key, label, count, as_daemons in runs:
            with postgres_database(args.postgres) as url, settled(url, len(pages)) as done:
                env = {
                    **ENV,
                    "MONITOR_DATABASE_URL": url,
                    "MONITOR_FEEDS_FILE": str(feeds_file),
                    "MONITOR_EXTRACT_PROCESSES": str(args.extract_processes),
                }
                if as_daemons:
                    env["MONITOR_POLL_SECONDS"] = "1"
                batch = run_workers(count, env, workdir, servers, done if as_daemons else None)
                db = stored(url)
            rates[key] = report(label, batch, db, len(pages), gold)
            story_counts[key] = db.stories
    one, two, daemons = rates["one"], rates["two"], rates["daemons"]
    print("summary:")
    print(f"  trafilatura alone     {alone:6.1f} articles/s (in this process, no HTTP)")
    print(f"  one worker            {one:6.1f} articles/s  ({one / alone:.0%} of trafilatura alone)")
    print(f"  two workers (--once)  {two:6.1f} articles/s  (×{two / one:.2f} one worker)")
    print(f"  two daemons           {daemons:6.1f} articles/s  (×{daemons / one:.2f} one worker)")
    print(
        f"  stories: one worker {story_counts['one']}, two workers {story_counts['two']}, "
        f"two daemons {story_counts['daemons']}"
    )
    print(f"  one worker ≥ 80 % of trafilatura alone: {'yes' if one >= 0.8 * alone else 'no'}")
    print(f"  two processes ≥ 1.6× one: {'yes' if two >= 1.6 * one else 'no'}")
    print(f"  (two daemons ≥ 1.6× one: {'yes' if daemons >= 1.6 * one else 'no'})")
    print(f"  benchmark wall time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
