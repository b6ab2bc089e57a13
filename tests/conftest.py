"""Fixtures: a fresh database on each engine (SQLite file, real PostgreSQL), loopback servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from benchmarks.corpus import LoopbackServer, article_page, rss, seeds

POSTGRES_ADMIN = os.environ.get("MONITOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_database() -> Iterator[str]:
    name = f"monitor_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is required for the tests ({POSTGRES_ADMIN}): {e}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/monitor.db"
    else:
        yield from _postgres_database()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


OUTLETS = ["Numerama", "Frandroid", "01net", "Next", "Siècle Digital"]


@pytest.fixture
def seed_sites(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Five outlets on 127.0.0.2-6, each with its article page and RSS feed, plus an aggregator feed on 127.0.0.7
    that lists two of the same articles again under tracking parameters."""
    with ExitStack() as stack:
        servers = [stack.enter_context(LoopbackServer(f"127.0.0.{i}")) for i in range(2, 8)]
        feeds_yaml = ["feeds:"]
        aggregator_items = []
        for seed, site, server in zip(seeds(), OUTLETS, servers, strict=False):
            url = f"{server.base}/actualites/{seed.name}-article.html"
            server.add(
                f"/actualites/{seed.name}-article.html",
                article_page(title=seed.title, body=seed.body, site=site, url=url, published=seed.published),
            )
            item = {
                "title": seed.title,
                "link": url,
                "published": datetime.fromisoformat(seed.published + "T09:30:00+01:00"),
            }
            server.add("/feed/", rss(site, server.base, [item]), "application/rss+xml; charset=utf-8")
            feeds_yaml.append(f'  - {{name: "{site}", url: "{server.base}/feed/"}}')
            if seed.name in ("001", "004"):
                aggregator_items.append({**item, "link": url + "?utm_source=rss&utm_medium=feed#comments"})
        servers[-1].add("/rss.xml", rss("Agrégateur", servers[-1].base, aggregator_items), "text/xml")
        feeds_yaml.append(f'  - {{name: "Agrégateur", url: "{servers[-1].base}/rss.xml", interval: 30m}}')
        feeds_file = tmp_path / "feeds.yaml"
        feeds_file.write_text("\n".join(feeds_yaml) + "\n", encoding="utf-8")
        yield feeds_file, servers
