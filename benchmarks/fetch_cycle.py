"""Fetch cycle at scale: `monitor run --once` on 1,000 feeds over 50 loopback hosts, cold then warm.

    .venv/bin/python benchmarks/fetch_cycle.py [--min-interval 0.5] [--global-concurrency 64]

Hosts 127.0.1.1-50 each serve 20 RSS feeds (one item each, linking to an article page of rpm2-dev text on the
same host) and a robots.txt, every reply after 50 ms of added latency; feeds send an ETag and answer 304 when
If-None-Match matches. Cycle 1 is cold (feeds, robots.txt, pages), cycle 2 runs the same command again (every
feed 304). Each is the wall clock of the real CLI in a subprocess, compared with the politeness lower bound; the
servers check that no host saw two request starts closer than the minimum interval, nor more than 2 at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from benchmarks.common import Run, machine, run_cli  # noqa: E402
from benchmarks.corpus import RPM2, LoopbackServer, Reply, Route, article_page, rss  # noqa: E402

HOSTS = [f"127.0.1.{i}" for i in range(1, 51)]
FEEDS_PER_HOST = 20
LATENCY_S = 0.05
HOST_CONCURRENCY = 2
GAP_TOLERANCE_S = 0.010
KINDS = ("feeds", "pages", "robots")


@dataclass(frozen=True)
class Traffic:
    """What the servers saw during one run."""

    by_kind: Counter[str]
    per_host: dict[str, int]
    worst_gap_s: float  # smallest interval between two request starts on one host
    worst_gap_host: str
    close_pairs: int  # request starts closer than min_interval - tolerance, all hosts together
    very_close_pairs: int  # closer than half of min_interval
    pairs: int  # consecutive request starts on one host, all hosts together
    max_concurrency: int
    spans: dict[str, tuple[float, float]]  # kind: first and last request start (time.monotonic())
    not_modified: int  # feed requests answered 304


class Arrivals:
    """Start time and kind of every request, appended by the routes (any server thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, float]] = []
        self.not_modified = 0

    def add(self, kind: str) -> None:
        with self.lock:
            self.seen.append((kind, time.monotonic()))

    def add_not_modified(self) -> None:
        with self.lock:
            self.not_modified += 1


def delayed(reply: Reply, kind: str, arrivals: Arrivals, etag: str | None = None) -> Route:
    """A route answering after LATENCY_S; with an ETag, 304 when If-None-Match matches it."""

    def answer(request: BaseHTTPRequestHandler) -> Reply:
        arrivals.add(kind)
        time.sleep(LATENCY_S)
        if etag is not None and request.headers.get("If-None-Match") == etag:
            arrivals.add_not_modified()
            return 304, {"ETag": etag}, b""
        return reply

    return answer


@contextmanager
def serving(hosts: list[str]) -> Iterator[list[LoopbackServer]]:
    """One LoopbackServer per host, each on its own thread; stopped in parallel (each stop waits up to 0.5 s)."""
    servers: list[LoopbackServer] = []
    try:
        for host in hosts:
            servers.append(LoopbackServer(host).__enter__())
        yield servers
    finally:
        with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
            list(pool.map(lambda server: server.__exit__(None, None, None), servers))


def populate(servers: list[LoopbackServer], rows: list[dict[str, Any]], feeds_file: Path, arrivals: Arrivals) -> None:
    """Feeds, article pages and robots.txt on every server; the feeds.yaml listing all the feeds."""
    lines = ["feeds:"]
    robots = (200, {"Content-Type": "text/plain; charset=utf-8"}, b"User-agent: *\nAllow: /\n")
    for h, server in enumerate(servers):
        server.routes["/robots.txt"] = delayed(robots, "robots", arrivals)
        for j in range(FEEDS_PER_HOST):
            number = h * FEEDS_PER_HOST + j
            row = rows[number % len(rows)]
            title = f"{row['title']} ({number})"
            page_path = f"/article/{number:04d}.html"
            page = article_page(
                title=title,
                body=f"{row['text']}\nArticle numéro {number}.",
                site=f"Site {h + 1:02d}",
                url=server.base + page_path,
                published=row["published_at"][:10],
            )
            server.routes[page_path] = delayed(
                (200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()), "pages", arrivals
            )
            item = {
                "title": title,
                "link": server.base + page_path,
                "published": datetime.fromisoformat(row["published_at"]),
            }
            feed = rss(f"Site {h + 1:02d}, flux {j:02d}", server.base, [item]).encode()
            etag = '"' + hashlib.sha256(feed).hexdigest()[:16] + '"'
            feed_path = f"/feed/{j:02d}.xml"
            server.routes[feed_path] = delayed(
                (200, {"Content-Type": "application/rss+xml; charset=utf-8", "ETag": etag}, feed),
                "feeds",
                arrivals,
                etag,
            )
            lines.append(f'  - {{name: "host{h + 1:02d}-feed{j:02d}", url: "{server.base}{feed_path}"}}')
    feeds_file.write_text("\n".join(lines) + "\n", encoding="utf-8")


def reset(servers: list[LoopbackServer], arrivals: Arrivals) -> None:
    with arrivals.lock:
        arrivals.seen.clear()
        arrivals.not_modified = 0
    for server in servers:
        with server.lock:
            server.requests.clear()
            server.starts.clear()
            server.max_active = 0


def kind_of(path: str) -> str:
    if path == "/robots.txt":
        return "robots"
    return "feeds" if path.startswith("/feed/") else "pages" if path.startswith("/article/") else "other"


def traffic(servers: list[LoopbackServer], arrivals: Arrivals, min_interval: float) -> Traffic:
    """Requests per kind and per host, the closest two starts on any host, the highest per-host concurrency."""
    by_kind: Counter[str] = Counter()
    per_host: dict[str, int] = {}
    worst_gap, worst_host, close, very_close, pairs = float("inf"), "-", 0, 0, 0
    for server in servers:
        for path, _headers in server.requests:
            by_kind[kind_of(path)] += 1
        per_host[server.host] = len(server.requests)
        starts = sorted(server.starts)
        gaps = [b - a for a, b in pairwise(starts)]
        pairs += len(gaps)
        close += sum(1 for gap in gaps if gap < min_interval - GAP_TOLERANCE_S)
        very_close += sum(1 for gap in gaps if gap < min_interval / 2)
        if gaps and min(gaps) < worst_gap:
            worst_gap, worst_host = min(gaps), server.host
    concurrency = max(server.max_active for server in servers)
    spans: dict[str, tuple[float, float]] = {}
    for kind, moment in arrivals.seen:
        first, last = spans.get(kind, (moment, moment))
        spans[kind] = (min(first, moment), max(last, moment))
    return Traffic(
        by_kind, per_host, worst_gap, worst_host, close, very_close, pairs, concurrency, spans, arrivals.not_modified
    )


def db_summary(database_url: str) -> str:
    """Articles (by placement) and feed items (by state) in the database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            methods = db.execute(text("SELECT placement_method, COUNT(*) FROM articles GROUP BY 1 ORDER BY 1")).all()
            states = db.execute(text("SELECT state, COUNT(*) FROM feed_items GROUP BY 1 ORDER BY 1")).all()
    finally:
        engine.dispose()
    total = sum(int(n) for _method, n in methods)
    placed = ", ".join(f"{method} {n}" for method, n in methods)
    items = ", ".join(f"{state} {n}" for state, n in states)
    return f"articles in DB {total} ({placed}); feed items: {items}"


def report(label: str, run: Run, seen: Traffic, min_interval: float) -> None:
    busiest = max(seen.per_host, key=lambda host: seen.per_host[host])
    bound = (seen.per_host[busiest] - 1) * min_interval + LATENCY_S
    kinds = ", ".join(
        f"{kind} {seen.by_kind[kind]}" for kind in (*KINDS, "other") if kind in KINDS or seen.by_kind[kind]
    )
    floor = min_interval - GAP_TOLERANCE_S
    gap_ok = "OK"
    if seen.close_pairs:
        gap_ok = (
            f"VIOLATED by {seen.close_pairs} of {seen.pairs} consecutive pairs "
            f"({seen.very_close_pairs} under {min_interval * 500:.0f} ms)"
        )
    conc_ok = "OK" if seen.max_concurrency <= HOST_CONCURRENCY else "VIOLATED"
    logged = [line for line in run.stderr.splitlines() if " WARNING " in line or " ERROR " in line]
    reasons = Counter(": ".join(line.split(": ")[-2:]) for line in logged)  # "network: ReadError"
    timeline = ", ".join(
        f"{kind} {first - run.started:.1f}-{last - run.started:.1f} s"
        for kind, (first, last) in sorted(seen.spans.items(), key=lambda span: span[1])
    )
    print(f"  {label}")
    print(f"    wall time {run.seconds:7.2f} s   child peak RSS {run.max_rss_kib / 1024:5.0f} MiB")
    print(f"    requests served {sum(seen.by_kind.values())} ({kinds}; {seen.not_modified} answered 304)")
    print(
        f"    politeness bound {bound:6.2f} s ({seen.per_host[busiest]} requests to {busiest}, "
        f"(n-1) x {min_interval:g} s + {LATENCY_S * 1000:.0f} ms)   time/bound {run.seconds / bound:5.2f}"
    )
    print(
        f"    closest request starts on one host {seen.worst_gap_s * 1000:.1f} ms ({seen.worst_gap_host}; "
        f"floor {floor * 1000:.0f} ms): {gap_ok}"
    )
    print(f"    max concurrent requests on one host {seen.max_concurrency} (cap {HOST_CONCURRENCY}): {conc_ok}")
    print(f"    requests started (from launch): {timeline or 'none'}; process exit {run.seconds:.1f} s")
    print(f"    monitor: {run.stdout.strip()}")
    if logged:
        print(
            f"    {len(logged)} warning/error log lines: " + ", ".join(f"{r} x{n}" for r, n in reasons.most_common(5))
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--min-interval", type=float, default=0.5, help="MONITOR_HOST_MIN_INTERVAL (default 0.5)")
    parser.add_argument("--global-concurrency", type=int, default=64, help="MONITOR_GLOBAL_CONCURRENCY (default 64)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in RPM2.read_text(encoding="utf-8").splitlines() if line.strip()]
    machine()
    feeds = len(HOSTS) * FEEDS_PER_HOST
    print(
        f"monitor run --once: {feeds} feeds on {len(HOSTS)} hosts ({HOSTS[0]}-{HOSTS[-1]}), 1 item each, "
        f"{LATENCY_S * 1000:.0f} ms latency, HOST_MIN_INTERVAL={args.min_interval:g}, "
        f"HOST_CONCURRENCY={HOST_CONCURRENCY}, GLOBAL_CONCURRENCY={args.global_concurrency}, SQLite"
    )
    arrivals = Arrivals()
    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as tmp, serving(HOSTS) as servers:
        workdir = Path(tmp)
        feeds_file = workdir / "feeds.yaml"
        populate(servers, rows, feeds_file, arrivals)
        url = f"sqlite:///{workdir}/fetch-cycle.db"
        env = {
            "MONITOR_DATABASE_URL": url,
            "MONITOR_FEEDS_FILE": str(feeds_file),
            "MONITOR_ALLOW_PRIVATE_ADDRESSES": "127.0.0.0/8",
            "MONITOR_HOST_MIN_INTERVAL": str(args.min_interval),
            "MONITOR_HOST_CONCURRENCY": str(HOST_CONCURRENCY),
            "MONITOR_GLOBAL_CONCURRENCY": str(args.global_concurrency),
        }
        for label in ("cycle 1 (cold: feeds, robots.txt, pages)", "cycle 2 (warm: every feed 304)"):
            reset(servers, arrivals)
            run = run_cli(["run", "--once"], env, workdir)
            report(label, run, traffic(servers, arrivals, args.min_interval), args.min_interval)
            print(f"    {db_summary(url)}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"peak RSS of any child process: {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
