"""Fixtures: a fresh database on each engine (SQLite file, real PostgreSQL), the seed stories, loopback servers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from benchmarks.corpus import LoopbackServer, article_page, rss, seeds
from monitor.storage import Storage
from tests.support import (
    ENGINES,
    POSTGRES_ADMIN,
    own_database,
    postgres_database,
    seed_database,
    seeded_env,
    serving,
    stories_of,
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Two test processes per core, eight at most: a test waits on servers, daemons and the database as
    often as it computes, and a second process per core fills those waits (on 2 cores: 233 s, against
    273 s with one per core)."""
    return min(2 * (os.cpu_count() or 1), 8)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (``@pytest.mark.slow``, a quarter of the run's CPU between ten of them): started
    last, one of them alone would set how long the run takes."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def schema_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """A database on an engine brought to the current schema once per test process, to copy: migrating
    each test's own database from nothing cost a fifth of a second of CPU each time."""
    made: dict[str, str] = {}
    with ExitStack() as stack:

        def template(engine: str) -> str:
            if engine not in made:
                url = stack.enter_context(own_database(engine, tmp_path_factory.mktemp(f"schema-{engine}")))
                with Storage(url) as storage:
                    storage.upgrade()
                made[engine] = url
            return made[engine]

        yield template


@pytest.fixture(params=ENGINES)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, schema_template: Callable[[str], str]
) -> Iterator[str]:
    """A database of the test's own on each engine, at the current schema (what `monitor` finds after its
    first start); tests of a database from nothing, or of an older schema, make their own."""
    with own_database(request.param, tmp_path, schema_template(request.param)) as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session", params=ENGINES)
def seed_template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, int]]]:
    """The seed stories imported once per engine through the real CLI (``seed_database``), and which
    story each outlet's article is in. Never opened again: the fixtures below copy it, which takes a
    tenth of an import."""
    directory = tmp_path_factory.mktemp(f"seeds-{request.param}")
    with own_database(request.param, directory) as url:
        seed_database(url, directory)
        yield url, stories_of(url)


@pytest.fixture
def seeded_database(
    seed_template: tuple[str, dict[str, int]], tmp_path: Path
) -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    """A copy of the seed stories of the test's own, which it may change; the environment of a `monitor`
    process on it, and which story each outlet's article is in."""
    template, stories = seed_template
    with own_database(make_url(template).get_backend_name(), tmp_path, template) as url:
        yield seeded_env(url, tmp_path), stories


@pytest.fixture(scope="session")
def seeded_desk(
    seed_template: tuple[str, dict[str, int]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str], dict[str, int]]]:
    """`monitor web` on a copy of the seed stories, started once per engine and shared by the tests that
    only read through it (the desk cannot write); on PostgreSQL the database refuses writes from anyone,
    so a test that writes there fails instead of changing its neighbours' data. Its base URL, the
    environment and which story each outlet's article is in."""
    template, stories = seed_template
    engine = make_url(template).get_backend_name()
    directory = tmp_path_factory.mktemp(f"desk-{engine}")
    with own_database(engine, directory, template) as url:
        if engine == "postgresql":
            with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{make_url(url).database}" SET default_transaction_read_only = on')
        env = seeded_env(url, directory)
        with serving(env) as base:
            yield base, env, stories


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
