"""Several `monitor run` processes on one PostgreSQL: the same result as one worker, and a killed worker's
leased work completes elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from sqlalchemy import text

from benchmarks.corpus import LoopbackServer, article_page, reprints, rss
from tests.support import connected, postgres_database, write_feeds

TOPICS = ["T01_C1", "T03_C1", "T06_C1", "T07_C1", "T09_C1", "T11_C1", "T14_C1"]  # unrelated events
PER_GROUP = 20
HOSTS = 10


def _partition(database_url: str) -> tuple[set[frozenset[str]], int, dict[str, int]]:
    with connected(database_url) as db:
        rows = db.execute(text("SELECT url, story_id FROM articles")).all()
        states = dict(db.execute(text("SELECT state, COUNT(*) FROM feed_items GROUP BY state")).all())
    stories: dict[int, set[str]] = {}
    for url, story in rows:
        stories.setdefault(story, set()).add(url.split("/", 3)[3])  # host-independent: the path
    return {frozenset(s) for s in stories.values()}, len(rows), states


def _serve(stack: ExitStack, tmp_path: Path) -> Path:
    servers = [stack.enter_context(LoopbackServer(f"127.0.0.{60 + h}")) for h in range(HOSTS)]
    items: dict[int, list[dict[str, object]]] = {h: [] for h in range(HOSTS)}
    when = datetime(2024, 11, 5, 9, 0, tzinfo=UTC)  # every report published at the same moment
    for n, article in enumerate(reprints(TOPICS, PER_GROUP)):
        server = servers[n % HOSTS]
        path = f"/g{article['group']}/a{n}.html"
        page = article_page(
            title=article["title"],
            body=article["body"],
            site=f"Média {n % HOSTS}",
            url=server.base + path,
            published="2024-11-05",
        ).encode()

        def slow(handler: BaseHTTPRequestHandler, page: bytes = page) -> tuple[int, dict[str, str], bytes]:
            time.sleep(0.05)
            return 200, {"Content-Type": "text/html; charset=utf-8"}, page

        server.routes[path] = slow
        items[n % HOSTS].append({"title": article["title"], "link": server.base + path, "published": when})
    feeds = {
        f"média {h}": servers[h].add("/feed.xml", rss(f"Média {h}", servers[h].base, items[h]), "application/rss+xml")
        for h in range(HOSTS)
    }
    return write_feeds(tmp_path / "feeds.yaml", feeds)


def _env(database_url: str, feeds_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MONITOR_DATABASE_URL": database_url,
        "MONITOR_FEEDS_FILE": str(feeds_file),
        "MONITOR_ALLOW_PRIVATE_ADDRESSES": "127.0.0.0/8",
        "MONITOR_HOST_MIN_INTERVAL": "0",
        "MONITOR_POLL_SECONDS": "1",
        "MONITOR_LEASE_SECONDS": "4",
        "MONITOR_LOG_LEVEL": "WARNING",
    }


@pytest.mark.slow
def test_four_workers_match_one_and_survive_a_kill(tmp_path: Path, postgres_url: str) -> None:
    total = len(TOPICS) * PER_GROUP
    with ExitStack() as stack:
        feeds_file = _serve(stack, tmp_path)
        single_url = stack.enter_context(postgres_database())
        single = subprocess.run(
            [sys.executable, "-m", "monitor", "run", "--once"],
            env=_env(single_url, feeds_file),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert single.returncode == 0, single.stderr
        expected, count, _ = _partition(single_url)
        assert count == total and len(expected) == len(TOPICS)

        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "monitor", "run"],
                env=_env(postgres_url, feeds_file),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            deadline = time.monotonic() + 240
            killed = False
            states: dict[str, int] = {}
            while time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    _, stored, states = _partition(postgres_url)
                except Exception:
                    continue
                if not killed and stored >= total // 5:
                    workers[0].send_signal(signal.SIGKILL)  # mid-run: its leased feeds and items must not be lost
                    killed = True
                if states.get("done") == total:
                    break
            assert killed, "the run finished before a worker could be killed"
        finally:
            for worker in workers[1:]:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(timeout=30)
        assert all(w.returncode == 0 for w in workers[1:]), [w.stderr.read() for w in workers[1:] if w.stderr]
    grouping, stored, states = _partition(postgres_url)
    assert stored == total  # no duplicate article (the URL is unique) and none lost
    assert states == {"done": total}
    assert len(grouping) == len(TOPICS)  # exactly the gold number of stories
    assert grouping == expected  # the same grouping a single worker produces
