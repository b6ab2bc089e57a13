"""feeds.yaml and environment validation: start-up stops with the feed and the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from monitor.config import Settings, load_digests, load_feeds
from monitor.errors import ConfigError
from tests.support import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_feeds_file_is_valid_and_real() -> None:
    feeds = load_feeds(ROOT / "feeds.yaml")
    assert len(feeds) >= 20
    assert all(feed.url.startswith("https://") for feed in feeds)
    hosts = {feed.url.split("/")[2] for feed in feeds}
    assert {"www.numerama.com", "next.ink", "www.lemondeinformatique.fr", "www.lemonde.fr"} <= hosts


@pytest.mark.parametrize(
    ("body", "feed", "field"),
    [
        ("feeds:\n  - {name: A}\n", "A", "url"),
        ("feeds:\n  - {name: A, url: 'https://a.fr/feed'}\n  - {name: A, url: 'https://b.fr/feed'}\n", "A", "name"),
        ("feeds:\n  - {name: A, url: 'https://a.fr/feed', interval: 10s}\n", "A", "interval"),
        ("feeds:\n  - {name: A, url: 'https://a.fr/feed', interval: soon}\n", "A", "interval"),
        ("feeds:\n  - {name: A, url: 'https://a.fr/feed'}\n  - {name: B, url: 'https://a.fr/feed'}\n", "B", "url"),
        ("feeds:\n  - {name: A, url: 'https://a.fr/feed', tags: tech}\n", "A", "tags"),
        ("feeds:\n  - {name: A, url: 'https://a.fr/feed', intervall: 5m}\n", "A", "intervall"),
        ("feeds:\n  - {url: 'https://a.fr/feed'}\n", "#1", "name"),
        # what the feeds table cannot hold (PostgreSQL refused it with "value too long", or a NUL, at start-up)
        (f"feeds:\n  - {{name: {'N' * 201}, url: 'https://a.fr/feed', outlet: A}}\n", "N" * 79 + "…", "name"),
        (f"feeds:\n  - {{name: A, url: 'https://a.fr/{'x' * 2048}'}}\n", "A", "url"),
        ('feeds:\n  - {name: "A\\0B", url: "https://a.fr/feed", outlet: A}\n', "A\x00B", "name"),
        ('feeds:\n  - {name: A, url: "https://a.fr/\\0feed"}\n', "A", "url"),
        ('feeds:\n  - {name: A, url: "https://a.fr/feed", outlet: "A\\x01"}\n', "A", "outlet"),
    ],
)
def test_bad_feed_entries_name_feed_and_field(tmp_path: Path, body: str, feed: str, field: str) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_feeds(path)
    assert info.value.feed == feed and info.value.field == field
    assert f"feed {feed!r}" in str(info.value) and f"field {field!r}" in str(info.value)


def test_yaml_error_stops_the_daemon_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("feeds:\n  - {name: A, url: [unclosed\n", encoding="utf-8")
    result = run_cli(
        "run", "--once", env={"MONITOR_FEEDS_FILE": str(path), "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    )
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr and str(path) in result.stderr


def test_interval_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "feeds:\n  - {name: A, url: 'https://a.fr/feed', interval: 2h, language: fr, tags: [ia]}\n"
        "  - {name: B, url: 'https://b.fr/feed', interval: 600}\n",
        encoding="utf-8",
    )
    a, b = load_feeds(path, default_interval="15m")
    assert (a.interval_s, a.tags, b.interval_s, b.language) == (7200, ("ia",), 600, "fr")


def test_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_DATABASE_URL", "postgresql+psycopg://u@db/monitor")
    monkeypatch.setenv("MONITOR_ALLOW_PRIVATE_ADDRESSES", "127.0.0.0/8, ::1/128")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://u@db/monitor"
    assert [str(n) for n in settings.allowed_networks() or []] == ["127.0.0.0/8", "::1/128"]
    monkeypatch.setenv("MONITOR_ALLOW_PRIVATE_ADDRESSES", "not-a-network")
    with pytest.raises(ValueError, match="MONITOR_ALLOW_PRIVATE_ADDRESSES"):
        Settings()


DIGEST_FEEDS = "feeds:\n  - {name: A, url: 'https://a.fr/feed'}\ndigests:\n"


@pytest.mark.parametrize(
    ("digest", "name", "field"),
    [
        ("  - {name: d, recipients: [x@y.fr], schedule: '61 7 * * *'}\n", "d", "schedule"),
        ("  - {name: d, recipients: [x@y.fr], schedule: '0 7 * * *', timezone: Mars/Olympus}\n", "d", "timezone"),
        ("  - {name: d, recipients: [pas-une-adresse], schedule: '0 7 * * *'}\n", "d", "recipients"),
        ("  - {name: d, recipients: [x@y.fr], schedule: '0 7 * * *', period: 90d}\n", "d", "period"),
        ("  - {name: d, recipients: [x@y.fr], schedule: '0 7 * * *', min_outlets: 0}\n", "d", "min_outlets"),
        ("  - {name: d, recipients: [x@y.fr], schedule: '0 7 * * *', query: ''}\n", "d", "query"),
        (
            "  - {name: d, recipients: [x@y.fr], schedule: '0 7 * * *'}\n  - {name: d, recipients: [z@y.fr], "
            "schedule: '0 8 * * *'}\n",
            "d",
            "name",
        ),
    ],
)
def test_bad_digests_name_digest_and_field(tmp_path: Path, digest: str, name: str, field: str) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(DIGEST_FEEDS + digest, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_digests(path)
    assert (info.value.digest, info.value.field) == (name, field)
    assert f"digest {name!r}" in str(info.value)


def test_digest_defaults(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        DIGEST_FEEDS + "  - {name: matin, recipients: veille@example.fr, schedule: '0 7 * * 1-5', "
        "query: 'Meta \"open source\"', outlets: [Next]}\n",
        encoding="utf-8",
    )
    (digest,) = load_digests(path)
    assert digest.recipients == ("veille@example.fr",) and digest.timezone == "Europe/Paris"
    assert (digest.period_s, digest.min_outlets, digest.max_stories, digest.send_empty) == (86400, 1, 20, False)
    assert digest.query == 'Meta "open source"' and digest.outlets == ("Next",)
    assert load_digests(ROOT / "feeds.yaml") == []  # the shipped file has none until you add yours


def test_settings_accept_the_edges_of_their_ranges(tmp_path: Path) -> None:
    settings = Settings(
        global_concurrency=1,
        host_concurrency=1,
        host_min_interval=0,
        max_redirects=0,
        smtp_port=65535,
        http_port=1,
        story_threshold=1,
        story_refine_rounds=0,
        max_interval="15m",  # equal to the default interval
        import_max_line_bytes=1024,
        log_level="warning",
        templates_dir=tmp_path,
    )
    assert settings.log_level == "WARNING" and settings.templates_dir == tmp_path
    Settings(lease_seconds=86400, retention_days=36500, item_max_attempts=20, extract_processes=64, read_timeout=3600)
    defaults = Settings()
    assert (defaults.lease_seconds, defaults.extract_timeout, defaults.import_max_line_bytes) == (60, 30, 5 * 1024**2)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("global_concurrency", 0),
        ("story_threshold", 0),
        ("story_threshold", 1.01),
        ("smtp_port", 0),
        ("lease_seconds", 0),
        ("import_max_line_bytes", 1023),
        ("read_timeout", float("inf")),
        ("log_level", "NOTSET"),
        ("max_interval", "14m"),
    ],
)
def test_settings_refuse_values_out_of_range(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**{field: value})  # type: ignore[arg-type]
    assert [error["loc"] for error in info.value.errors()] == [(field,)]
