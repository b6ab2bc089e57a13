"""Operations: the health/metrics endpoint of a running daemon, JSON logs, retention, and the compose file."""

from __future__ import annotations

import json
import re
import shlex
import socket
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from benchmarks.corpus import RPM2, LoopbackServer
from monitor.config import Settings
from monitor.grouping.params import StoryParams
from monitor.ops.health import HealthServer
from monitor.ops.retention import retention
from monitor.pipeline.placement import Ingestor
from monitor.storage import Storage
from tests.support import (
    DAEMON_START_UP_S,
    connected,
    loopback_env,
    minute_soon,
    place_in_batches,
    query,
    run_cli,
    running_daemon,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_running_daemon_serves_health_metrics_and_json_logs(seed_sites, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    feeds_file, _servers = seed_sites
    with LoopbackServer("127.0.0.9") as broken:
        broken.add("/feed.xml", "<html><body>Nouveau site</body></html>")
        feeds_file.write_text(
            feeds_file.read_text(encoding="utf-8") + f'  - {{name: "Cassé", url: "{broken.base}/feed.xml"}}\n',
            encoding="utf-8",
        )
        port = free_port()
        env = loopback_env(
            f"sqlite:///{tmp_path}/ops.db",
            feeds_file,
            host_min_interval="0",
            poll_seconds="1",
            http_port=str(port),
            log_format="json",
        )
        metrics = ""

        def counted() -> bool:
            nonlocal metrics
            try:
                metrics = _get(f"http://127.0.0.1:{port}/metrics")[1]
            except OSError:
                return False
            placed = re.findall(r'^monitor_articles_ingested_total\{method="(\w+)"\} (\d+)\.0$', metrics, re.M)
            return sum(int(count) for _, count in placed) == 5

        with running_daemon(env) as daemon:
            wait_until(counted, timeout_s=90)
            assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
            assert _get(f"http://127.0.0.1:{port}/readyz") == (200, "ready\n")
            assert _get(f"http://127.0.0.1:{port}/nope")[0] == 404
    err = daemon.stderr
    assert 'monitor_feeds{state="ok"} 6.0' in metrics and 'monitor_feeds{state="failing"} 1.0' in metrics
    assert re.search(r'^monitor_articles_ingested_total\{method="new_story"\} [12]\.0$', metrics, re.M)
    assert query(f"sqlite:///{tmp_path}/ops.db", "SELECT COUNT(*) AS n FROM stories WHERE article_count > 0") == [
        {"n": 2}
    ]  # whichever came first: 004 may have joined 000's story on arrival, and was moved out since
    assert 'monitor_fetches_total{kind="page",outcome="ok"} 5.0' in metrics
    assert 'monitor_fetches_total{kind="feed",outcome="not_a_feed"}' in metrics
    assert re.search(r"^monitor_queue_lag_seconds \d", metrics, re.M)
    assert re.search(r'^monitor_fetch_duration_seconds_count\{kind="page"\} 5\.0', metrics, re.M)
    assert "monitor_db_pool_size" in metrics and "monitor_stories_merged_total 0.0" in metrics
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    failure = next(line for line in lines if line["level"] == "warning" and line.get("feed") == "Cassé")
    assert failure["url"].endswith("/feed.xml") and "HTML page" in failure["message"]
    assert not [line for line in err.splitlines() if line.strip() and not line.startswith("{")]


def test_readyz_says_why_it_is_not_ready(tmp_path: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path}/empty.db")
    server = HealthServer(storage, "127.0.0.1", 0)
    server.start()
    try:
        status, body = _get(f"http://127.0.0.1:{server.port}/readyz")
        assert status == 503 and "schema at None" in body
        storage.upgrade()
        assert _get(f"http://127.0.0.1:{server.port}/readyz") == (200, "ready\n")
    finally:
        server.stop()


def test_retention_prunes_raw_html_and_history_once_per_period(tmp_path: Path, database_url: str) -> None:
    from tests.support import write_seeds

    archive = tmp_path / "seeds.jsonl"
    write_seeds(archive, same_day=False)
    lines = [json.loads(line) for line in archive.read_text(encoding="utf-8").splitlines()]
    for line in lines:  # archive pages as HTML, so raw_html is kept
        line["html"] = f"<html><body><article><h1>{line['title']}</h1><p>{line.pop('text')}</p></article></body></html>"
    archive.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    assert run_cli("import", str(archive), env={"MONITOR_DATABASE_URL": database_url}).returncode == 0
    storage = Storage(database_url)
    engine = create_engine(database_url)
    with engine.begin() as db:
        db.execute(
            text("UPDATE articles SET fetched_at = :old WHERE source IN ('outlet-000', 'outlet-001')"),
            {"old": datetime.now(UTC) - timedelta(days=200)},
        )
    first = retention(storage, keep=timedelta(days=90))
    assert first == {"raw_html": 2, "feed_items": 0}
    assert retention(storage, keep=timedelta(days=90)) is None  # done for this period, by whichever worker
    with engine.connect() as db:
        kept = db.execute(text("SELECT COUNT(*) FROM articles WHERE raw_html IS NOT NULL")).scalar_one()
        assert kept == 3 and db.execute(text("SELECT COUNT(*) FROM articles")).scalar_one() == 5
    engine.dispose()
    storage.engine.dispose()


def test_compose_file_matches_the_code() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"postgres", "monitor", "mail"} <= set(services)
    assert services["postgres"]["healthcheck"]["test"] and "pgdata" in compose["volumes"]
    monitor = services["monitor"]
    assert monitor["build"] == "." and monitor["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "container_name" not in monitor and "ports" not in monitor  # so `--scale monitor=N` works
    fields = set(Settings.model_fields)
    for name in monitor["environment"]:
        assert name.startswith("MONITOR_") and name.removeprefix("MONITOR_").lower() in fields, name
    Settings(**{k.removeprefix("MONITOR_").lower(): v for k, v in monitor["environment"].items()})  # values valid
    smtp = services["mail"]
    assert monitor["environment"]["MONITOR_SMTP_HOST"] == "mail" and "mailpit" in smtp["image"]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    users = re.findall(r"^USER\s+([^\s:]+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0"), users  # the service runs as an unprivileged user
    command = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))[-1]  # type: ignore[union-attr]
    for step in command.split("&&"):
        args = shlex.split(step)
        assert args[0] == "monitor"
        result = run_cli(*args[1:], "--help", env={})
        assert result.returncode == 0, (step, result.stderr)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docker compose up --build --scale monitor=3" in readme


@pytest.mark.slow
def test_two_daemons_run_the_merge_pass_once(tmp_path: Path, postgres_url: str) -> None:
    """Stories placed by a worker and never merged (placed with merging switched off, so pieces of one event
    stay apart); two daemons on one PostgreSQL with an every-minute schedule: the pass runs once for the
    cluster, and the stories it merged are counted once in /metrics."""
    storage = Storage(postgres_url)
    storage.ensure_schema(upgrade=True)
    ingestor = Ingestor(storage, replace(StoryParams(), merge_threshold=1.0, refine_rounds=0))
    place_in_batches(ingestor, RPM2)
    storage.engine.dispose()
    with connected(postgres_url) as db:
        before = db.execute(text("SELECT COUNT(*) FROM stories WHERE merged_into_id IS NOT NULL")).scalar_one()
    feeds_file = tmp_path / "feeds.yaml"
    feeds_file.write_text("feeds: []\n", encoding="utf-8")
    ports = [free_port(), free_port()]

    def totals(name: str) -> list[float]:
        """Each daemon's counter; a daemon that does not answer fails the test (it must not read as 0)."""
        found = []
        for port in ports:
            value = re.search(rf"^{name}_total (\S+)$", _get(f"http://127.0.0.1:{port}/metrics")[1], re.M)
            found.append(float(value.group(1)) if value else 0.0)
        return found

    def answering() -> bool:
        try:
            return all(_get(f"http://127.0.0.1:{port}/healthz")[0] == 200 for port in ports)
        except OSError:
            return False

    envs = [loopback_env(postgres_url, feeds_file, merge_schedule="* * * * *", http_port=str(p)) for p in ports]
    fires_at = time.monotonic() + DAEMON_START_UP_S
    offset = minute_soon()  # one clock for both, as NTP gives them
    with running_daemon(envs[0], offset) as first, running_daemon(envs[1], offset) as second:
        # Both up before the minute begins, or the lock between them would go untested.
        assert wait_until(answering, timeout_s=30) and time.monotonic() < fires_at, (first.stderr, second.stderr)
        assert wait_until(lambda: sum(totals("monitor_stories_merged")) > 0, timeout_s=100), first.stderr
        time.sleep(2)
        counted, passes = totals("monitor_stories_merged"), totals("monitor_regrouping_passes")
    with connected(postgres_url) as db:
        records = db.execute(text("SELECT COUNT(*) FROM stories WHERE merged_into_id IS NOT NULL")).scalar_one()
    assert sorted(passes) == [0.0, 1.0]  # one daemon ran the pass, the other found it done
    assert sorted(counted)[0] == 0.0
    assert sum(counted) == records - before > 0  # before: stories regrouping emptied while placing
