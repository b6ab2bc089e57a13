"""Ingestion throughput on the 200 rpm2-dev articles: `monitor import` (text, HTML) and `monitor run --once`.

    .venv/bin/python benchmarks/ingest_throughput.py [--polite] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Every figure is the wall clock of the real CLI in a subprocess, so it includes interpreter start-up and the
schema migration (shown on its own as the empty-import line). Pages and feeds are served from 127.0.0.10-19.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from benchmarks.common import Run, machine, postgres_database, run_cli  # noqa: E402
from benchmarks.corpus import RPM2, LoopbackServer, article_page, rss  # noqa: E402

HOSTS = [f"127.0.0.{i}" for i in range(10, 20)]


def count_articles(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            return int(db.execute(text("SELECT COUNT(*) FROM articles")).scalar_one())
    finally:
        engine.dispose()


def report(label: str, run: Run, stored: int, expected: int, extra: str = "") -> None:
    rate = f"{stored / run.seconds:7.1f} articles/s" if stored else " " * 18
    check = "" if stored == expected else f"  MISMATCH: expected {expected}"
    print(
        f"  {label:<32} {run.seconds:7.2f} s {rate}  articles in DB {stored:>3}"
        f"  child peak RSS {run.max_rss_kib / 1024:5.0f} MiB{extra}{check}"
    )


def html_archive(rows: list[dict[str, Any]], path: Path) -> None:
    """The same articles with `html` (a full outlet page around the text) instead of `text`: extraction runs."""
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            page = article_page(
                title=row["title"],
                body=row["text"],
                site=row["source"],
                url=row["url"],
                published=row["published_at"][:10],
            )
            line = {k: row[k] for k in ("url", "title", "published_at", "source")}
            out.write(json.dumps({**line, "html": page}, ensure_ascii=False) + "\n")


def bench_import(rows: list[dict[str, Any]], postgres: str | None) -> None:
    """`monitor import` of the text archive and of its HTML twin, into fresh databases."""
    print(f"monitor import ({len(rows)} articles, {RPM2.name}):")
    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as tmp:
        workdir = Path(tmp)
        empty, html_file = workdir / "empty.jsonl", workdir / "rpm2-dev-html.jsonl"
        empty.write_text("", encoding="utf-8")
        html_archive(rows, html_file)
        cases = [("sqlite", "text", RPM2), ("sqlite", "html", html_file)]
        if postgres:
            cases += [("postgresql", "text", RPM2), ("postgresql", "html", html_file)]
        fixed = f"sqlite:///{workdir}/empty.db"
        run = run_cli(["import", str(empty)], {"MONITOR_DATABASE_URL": fixed}, workdir)
        report("sqlite, empty file (fixed cost)", run, count_articles(fixed), 0)
        for engine, kind, archive in cases:
            with ExitStack() as stack:
                if engine == "sqlite":
                    url = f"sqlite:///{workdir}/import-{kind}.db"
                else:
                    assert postgres is not None
                    url = stack.enter_context(postgres_database(postgres))
                run = run_cli(["import", str(archive)], {"MONITOR_DATABASE_URL": url}, workdir)
                report(f"{engine}, {kind}", run, count_articles(url), len(rows))


def bench_run_once(rows: list[dict[str, Any]], min_intervals: list[str]) -> None:
    """`monitor run --once` against one RSS feed and its article pages per loopback host."""
    sources = sorted({row["source"] for row in rows})
    print(f"monitor run --once ({len(rows)} articles, {len(sources)} feeds on {HOSTS[0]}-{HOSTS[-1]}, SQLite):")
    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        servers = [stack.enter_context(LoopbackServer(host)) for host in HOSTS]
        server_of = {source: servers[i % len(servers)] for i, source in enumerate(sources)}
        items: dict[str, list[dict[str, Any]]] = {source: [] for source in sources}
        for row in rows:
            server, path = server_of[row["source"]], urlsplit(row["url"]).path
            page = article_page(
                title=row["title"],
                body=row["text"],
                site=row["source"],
                url=server.base + path,
                published=row["published_at"][:10],
            )
            link = server.add(path, page)
            items[row["source"]].append(
                {"title": row["title"], "link": link, "published": datetime.fromisoformat(row["published_at"])}
            )
        feeds_yaml = ["feeds:"]
        for source in sources:
            server = server_of[source]
            feed_path = f"/feed/{source}.xml"
            server.add(feed_path, rss(source, server.base, items[source]), "application/rss+xml; charset=utf-8")
            feeds_yaml.append(f'  - {{name: "{source}", url: "{server.base}{feed_path}"}}')
        feeds_file = workdir / "feeds.yaml"
        feeds_file.write_text("\n".join(feeds_yaml) + "\n", encoding="utf-8")
        for interval in min_intervals:
            for server in servers:
                server.requests.clear()
            url = f"sqlite:///{workdir}/run-{interval}.db"
            env = {
                "MONITOR_DATABASE_URL": url,
                "MONITOR_FEEDS_FILE": str(feeds_file),
                "MONITOR_ALLOW_PRIVATE_ADDRESSES": "127.0.0.0/8",
                "MONITOR_HOST_MIN_INTERVAL": interval,
            }
            run = run_cli(["run", "--once"], env, workdir)
            served = sum(len(server.requests) for server in servers)
            report(f"HOST_MIN_INTERVAL={interval}", run, count_articles(url), len(rows), f"  requests {served}")
            print(f"    {run.stdout.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="also import into a throwaway database on this server")
    parser.add_argument("--polite", action="store_true", help="also run --once with MONITOR_HOST_MIN_INTERVAL=1.0")
    args = parser.parse_args()
    rows = [json.loads(line) for line in RPM2.read_text(encoding="utf-8").splitlines() if line.strip()]
    machine()
    bench_import(rows, args.postgres)
    bench_run_once(rows, ["0", "1.0"] if args.polite else ["0"])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"peak RSS of any child process: {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
