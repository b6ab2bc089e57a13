"""Latency of the analyst's desk (pages and JSON API) over real HTTP, on a PostgreSQL corpus of 10k to 1M articles.

    .venv/bin/python benchmarks/web_latency.py [--sizes 10000,100000] [--requests 200] [--budget 60]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--keep | --database URL]

The corpus is placement_scale.py's (``Corpus.grow``: bulk COPY of articles cut from the 205 real French texts,
spread over 2024, grouped into stories of 1-15 articles by 150 outlets, indexes rebuilt, VACUUM ANALYZE); one
database grows from one size to the next. It is a throwaway database dropped at the end, unless ``--keep`` (the
database is left and its URL printed) or ``--database URL`` (an existing database, grown to each size it is
smaller than, and measured at its own size when it is already larger; never dropped).

At each size the real ``monitor web`` runs in a child process on 127.0.0.1 (a free port), with the database
opened read-only as in production, and this process sends requests with httpx, one at a time over one
keep-alive connection, never off loopback. Each endpoint gets a warm-up (not timed), then up to --requests
timed requests, stopping early after --budget seconds: p50/p95/max of the wall clock from sending the request
to the whole body read (every answer must be a 200).

* ``GET /`` (the stories page) and ``GET /api/stories``, default filters;
* the same with ``min_outlets=2`` and a 7-day period: the corpus ends on 31 December 2024, so the period is its
  last 7 days (``since``/``from`` = the latest ``last_published_at`` minus 7 days), not the 7 days before now,
  which would be empty;
* ``GET /stories/{id}`` and ``GET /api/stories/{id}`` for a random sample of stories that have articles (a
  different story per request), then the 20 largest stories;
* ``GET /api/search?q=WORD`` and ``GET /search?q=WORD``, WORD the longest of the words found in most of the real
  texts (or --word).

Then, in this process, the ``Desk`` calls behind each endpoint are repeated with every SQL statement timed
(SQLAlchemy cursor events): the statements that take the time, and, for an endpoint over its target or with
--explain, EXPLAIN (ANALYZE, BUFFERS) of its slowest statement.

Targets (the issue), at 1M articles: p95 of the stories page and of /api/stories <= 100 ms, of a story page
<= 50 ms. Client, server and PostgreSQL share the machine's cores: the load average is printed with each size.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psycopg  # noqa: E402

from benchmarks.common import article_count, database, machine, psycopg_url  # noqa: E402
from benchmarks.placement_scale import (  # noqa: E402
    Corpus,
    StatementTimes,
    Template,
    _plan_summary,
    explain,
    instrument,
    load_templates,
    report_load,
)
from monitor.desk.params import StoryFilter, check_query  # noqa: E402
from monitor.desk.read import Desk  # noqa: E402
from monitor.search import index_terms  # noqa: E402
from monitor.storage import Storage  # noqa: E402

WARMUP = 10
LARGEST = 20  # the largest stories, measured after the random sample
PAGE_TARGET_MS, STORY_TARGET_MS = 100.0, 50.0
_PARAMS = re.compile(r"%\(\w+\)s(?:, %\(\w+\)s)*")
_SPACES = re.compile(r"\s+")
_COLUMNS = re.compile(r"^SELECT (DISTINCT )?(.*?) FROM ")


# --- the database ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    stories: int  # with articles
    random_ids: list[int]
    largest: list[tuple[int, int]]  # (id, article_count)
    latest: datetime  # the latest last_published_at


def sample(dsn: str, count: int, seed: int) -> Sample:
    with psycopg.connect(dsn) as conn:
        ids = [int(r[0]) for r in conn.execute("SELECT id FROM stories WHERE article_count > 0 ORDER BY id")]
        largest = [
            (int(i), int(n))
            for i, n in conn.execute(
                "SELECT id, article_count FROM stories ORDER BY article_count DESC, id LIMIT %s", (LARGEST,)
            )
        ]
        row = conn.execute("SELECT max(last_published_at) FROM stories").fetchone()
    if not ids or row is None or row[0] is None:
        raise SystemExit("the corpus has no stories")
    rng = random.Random(seed)
    return Sample(len(ids), rng.sample(ids, min(len(ids), count + WARMUP)), largest, row[0])


def common_word(templates: list[Template]) -> str:
    """The longest of the words most of the real texts share (a search that matches a large share of the corpus)."""
    df: Counter[str] = Counter()
    for tpl in templates:
        df.update({w.strip(".,;:!?«»()\"'").lower() for w in tpl.words})
    words = [w for w in df if w.isalpha() and len(w) >= 5 and index_terms(w)]
    top = max(df[w] for w in words)
    return max((w for w in words if df[w] >= 0.8 * top), key=lambda w: (len(w), df[w], w))


# --- the server --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(url: str, workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`monitor web` on a free loopback port, as a child process; its base URL once it answers."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_") and not k.lower().endswith("_proxy")}
    env = {**base, "MONITOR_DATABASE_URL": url, "MONITOR_LOG_LEVEL": "WARNING"}
    err_path = workdir / f"web-{port}.stderr"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "web", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(trust_env=False, timeout=5) as probe:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"monitor web exited {proc.returncode}:\n{err_path.read_text()[-2000:]}")
                try:
                    if probe.get(f"{address}/api/feeds").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"monitor web did not answer within 60 s:\n{err_path.read_text()[-2000:]}")
                time.sleep(0.2)
        yield address, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- measuring ---------------------------------------------------------------------------------------------------

Request = tuple[str, dict[str, str | int]]


@dataclass
class Result:
    label: str
    target_ms: float | None
    latencies_ms: list[float]
    bytes_mean: float
    note: str = ""

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    @property
    def verdict(self) -> str:
        if self.target_ms is None:
            return ""
        return "met" if self.percentile(95) <= self.target_ms else "MISSED"


def timed(
    client: httpx.Client, label: str, requests: list[Request], warmup: list[Request], budget_s: float,
    target_ms: float | None, note: Callable[[httpx.Response], str] | None = None,
) -> Result:  # fmt: skip
    """Warm-up requests (not timed), then the timed ones until the list or the budget runs out."""
    for path, params in warmup:
        response = client.get(path, params=params)
        if response.status_code != 200:
            raise SystemExit(f"GET {response.request.url} answered {response.status_code}: {response.text[:300]}")
    latencies, sizes = [], []
    last: httpx.Response | None = None
    stop = time.monotonic() + budget_s
    for path, params in requests:
        started = time.perf_counter()
        response = client.get(path, params=params)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"GET {response.request.url} answered {response.status_code}: {response.text[:300]}")
        latencies.append(elapsed * 1000)
        sizes.append(len(response.content))
        last = response
        if time.monotonic() > stop:
            break
    result = Result(label, target_ms, latencies, float(np.mean(sizes)), note(last) if note and last else "")
    print(
        f"  {label:<58} n={len(latencies):>3}  p50 {result.percentile(50):7.1f} ms  p95 {result.percentile(95):7.1f} ms"
        f"  max {max(latencies):7.1f} ms  {result.bytes_mean / 1024:6.1f} KiB  {result.note}",
        flush=True,
    )
    return result


def _total(response: httpx.Response) -> str:
    return f"total {response.json()['total']:,}"


def measure_http(
    address: str, picked: Sample, word: str, requests: int, budget_s: float
) -> tuple[list[Result], dict[str, str]]:
    since = (picked.latest - timedelta(days=7)).isoformat()
    week: dict[str, str | int] = {"min_outlets": 2, "since": since}
    week_page: dict[str, str | int] = {"min_outlets": 2, "from": since}
    ids = picked.random_ids
    timed_ids, warm_ids = ids[WARMUP:], ids[:WARMUP]
    largest = [i for i, _ in picked.largest]
    sizes = [n for _, n in picked.largest]

    def repeat(path: str, params: dict[str, str | int], n: int) -> list[Request]:
        return [(path, params)] * n

    results = []
    with httpx.Client(base_url=address, trust_env=False, timeout=120) as client:
        plan: list[tuple[str, list[Request], list[Request], float | None, Callable[[httpx.Response], str] | None]] = [
            ("GET / (stories page)", repeat("/", {}, requests), repeat("/", {}, WARMUP), PAGE_TARGET_MS, None),
            ("GET /api/stories", repeat("/api/stories", {}, requests), repeat("/api/stories", {}, WARMUP),
             PAGE_TARGET_MS, _total),
            ("GET /?min_outlets=2&from=<last 7 days>", repeat("/", week_page, requests), repeat("/", week_page, WARMUP),
             PAGE_TARGET_MS, None),
            ("GET /api/stories?min_outlets=2&since=<last 7 days>", repeat("/api/stories", week, requests),
             repeat("/api/stories", week, WARMUP), PAGE_TARGET_MS, _total),
            ("GET /stories/{id}, random stories", [(f"/stories/{i}", {}) for i in timed_ids],
             [(f"/stories/{i}", {}) for i in warm_ids], STORY_TARGET_MS, None),
            ("GET /api/stories/{id}, random stories", [(f"/api/stories/{i}", {}) for i in timed_ids],
             [(f"/api/stories/{i}", {}) for i in warm_ids], STORY_TARGET_MS, None),
            (f"GET /stories/{{id}}, the {len(largest)} largest ({min(sizes)}-{max(sizes)} articles)",
             [(f"/stories/{i}", {}) for i in largest], [], STORY_TARGET_MS, None),
            (f"GET /api/stories/{{id}}, the {len(largest)} largest", [(f"/api/stories/{i}", {}) for i in largest], [],
             STORY_TARGET_MS, None),
            (f"GET /api/search?q={word}", repeat("/api/search", {"q": word}, requests),
             repeat("/api/search", {"q": word}, 2), None, _total),
            (f"GET /search?q={word}", repeat("/search", {"q": word}, requests), repeat("/search", {"q": word}, 2),
             None, None),
        ]  # fmt: skip
        for label, timed_requests, warmup, target, note in plan:
            results.append(timed(client, label, timed_requests, warmup, budget_s, target, note))
    return results, {"since": since}


# --- where the time goes -------------------------------------------------------------------------------------------


def _shape(statement: str) -> str:
    return _PARAMS.sub("?", _SPACES.sub(" ", statement).strip())


def _shown(shape: str) -> str:
    """A statement on one line: a long column list elided."""
    columns = _COLUMNS.match(shape)
    if columns and len(columns.group(2)) > 40:
        shape = f"SELECT {columns.group(1) or ''}{columns.group(2)[:30]}... FROM {shape[columns.end() :]}"
    return shape if len(shape) <= 150 else shape[:147] + "..."


def profile(url: str, picked: Sample, word: str, since: str, explain_all: bool, missed: set[str]) -> None:
    """The Desk calls behind each endpoint, in this process, with every statement timed."""
    desk = Desk(url)
    times = StatementTimes()
    instrument(desk.engine, times, _shape, commits=False)
    week = StoryFilter(since=datetime.fromisoformat(since), min_outlets=2)
    query = check_query(word)
    ids = picked.random_ids[WARMUP : WARMUP + 50]
    calls: list[tuple[str, str, int, Callable[[int], object]]] = [
        ("GET / (stories page)", "GET / (stories page)", 10,
         lambda _: (desk.stories(StoryFilter()), desk.outlets(), desk.tags())),
        ("GET /api/stories", "GET /api/stories", 10, lambda _: desk.stories(StoryFilter())),
        ("GET /api/stories?min_outlets=2&since=<last 7 days>", "GET /api/stories?min_outlets=2&since=<last 7 days>",
         10, lambda _: desk.stories(week)),
        ("GET /stories/{id}, random stories", "Desk.story(id), random stories", len(ids),
         lambda k: desk.story(ids[k])),
        (f"GET /api/search?q={word}", f"Desk.search({word!r})", 3, lambda _: desk.search(query, StoryFilter())),
    ]  # fmt: skip
    try:
        for endpoint, label, repeats, call in calls:
            call(0)  # warm
            times.on = True
            started = time.perf_counter()
            for k in range(repeats):
                call(k)
            wall_ms = (time.perf_counter() - started) * 1000 / repeats
            times.on = False
            total_ms = sum(times.seconds.values()) * 1000 / repeats
            print(f"  {label}: {wall_ms:.1f} ms per call in-process, {total_ms:.1f} ms of it in SQL statements:")
            ranked = sorted(times.seconds.items(), key=lambda kv: -kv[1])
            for shape, seconds in ranked[:4]:
                text = _shown(shape)
                print(f"    {seconds * 1000 / repeats:7.1f} ms  [{times.calls[shape] / repeats:.0f} per call]  {text}")
            if ranked and ranked[0][0] in times.slowest and (explain_all or endpoint in missed):  # SELECTs only
                _, statement, parameters = times.slowest[ranked[0][0]]
                print("    its EXPLAIN (ANALYZE, BUFFERS):")
                for line in _plan_summary(explain(desk.engine, statement, parameters)):
                    print(f"        {line}")
            times.seconds.clear()
            times.calls.clear()
            times.slowest.clear()
    finally:
        desk.close()


# --- the report ----------------------------------------------------------------------------------------------------


def summary(rows: list[tuple[int, list[Result]]]) -> None:
    print("\nsummary (targets at 1M articles: stories page and /api/stories p95 <= 100 ms, a story page <= 50 ms):\n")
    print("| corpus | request | requests | p50 | p95 | max | target (p95) |")
    print("|---|---|---|---|---|---|---|")
    for size, results in rows:
        for r in results:
            target = f"{r.target_ms:.0f} ms: {r.verdict}" if r.target_ms is not None else "–"
            print(
                f"| {size:,} | `{r.label}` | {len(r.latencies_ms)} | {r.percentile(50):.1f} ms"
                f" | {r.percentile(95):.1f} ms | {max(r.latencies_ms):.1f} ms | {target} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000", help="corpus sizes, ascending (default %(default)s)")
    parser.add_argument("--postgres", metavar="ADMIN_URL", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--database", metavar="URL", help="an existing corpus database: grown, measured, kept")
    parser.add_argument("--keep", action="store_true", help="keep the database built (its URL is printed)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint (default %(default)s)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per endpoint at most (default %(default)s)")
    parser.add_argument("--word", help="the search word (default: a word most real texts share)")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN every endpoint's slowest statement")
    parser.add_argument("--seed", type=int, default=20250101)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes != sorted(sizes) or not sizes or min(sizes) < 1000:
        parser.error("--sizes: ascending, each at least 1000")
    if args.requests < 1 or args.budget <= 0:
        parser.error("--requests and --budget must be positive")
    machine()
    started = time.perf_counter()
    templates = load_templates()
    word = args.word or common_word(templates)
    print(f"{len(templates)} real texts loaded in {time.perf_counter() - started:.1f} s; search word {word!r}")
    rows: list[tuple[int, list[Result]]] = []
    with database(args.postgres, args.database, args.keep) as url, tempfile.TemporaryDirectory() as tmp:
        Storage(url).ensure_schema(upgrade=True)
        dsn = psycopg_url(url)
        corpus = Corpus(dsn, templates, args.seed)
        current = article_count(dsn)
        plan = [s for s in sizes if s >= current] or [current]
        if plan != sizes:
            print(f"the database holds {current:,} articles already: sizes below it are left out")
        for size in plan:
            if size > current:
                report_load(corpus.grow(size))
                current = size
            else:
                print(f"\ncorpus {current:,} articles (as found)")
            picked = sample(dsn, args.requests, args.seed + size)
            print(
                f"  {picked.stories:,} stories with articles, the largest {picked.largest[0][1]} articles;"
                f" latest coverage {picked.latest:%Y-%m-%d %H:%M} UTC;"
                f" 1-min load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
            )
            with serving(url, Path(tmp)) as (address, _proc):
                results, period = measure_http(address, picked, word, args.requests, args.budget)
            print(f"  (1-min load average after: {os.getloadavg()[0]:.1f})")
            rows.append((current, results))
            missed = {r.label for r in results if r.verdict == "MISSED"}
            print("  where the time goes (the same Desk calls in this process):")
            profile(url, picked, word, period["since"], args.explain, missed)
    summary(rows)


if __name__ == "__main__":
    main()
