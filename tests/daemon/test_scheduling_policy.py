"""The polling policy: adaptive intervals, server hints, backoff, and disabling a feed that stays broken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import text

from benchmarks.corpus import LoopbackServer
from monitor.daemon.policy import adaptive_interval, failure_delay, success_delay
from monitor.fetch.politeness import max_age_seconds, retry_after_seconds
from tests.support import connected, cycle, good_site, query, write_feeds

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_adaptive_interval_follows_the_publishing_rate() -> None:
    busy = [NOW - timedelta(minutes=10 * i) for i in range(200)]  # 6 an hour; the feed shows its last 200
    quiet = [NOW - timedelta(days=2), NOW - timedelta(days=5)]
    assert adaptive_interval(busy, NOW, floor_s=900, ceiling_s=21600) == 900  # never below the configured floor
    assert adaptive_interval(quiet, NOW, floor_s=900, ceiling_s=21600) == 21600  # a week / 2 items, capped
    every_two_hours = [NOW - timedelta(hours=2 * i) for i in range(24)]
    assert adaptive_interval(every_two_hours, NOW, floor_s=900, ceiling_s=21600) == 46 * 3600 // 24
    assert adaptive_interval([None, None], NOW, floor_s=900, ceiling_s=21600) == 21600  # no dates: ceiling
    assert adaptive_interval(busy, NOW, floor_s=30000, ceiling_s=21600) == 30000  # a slow configured feed stays slow


def test_server_hints_stretch_the_delay_but_are_capped() -> None:
    for _ in range(20):  # jitter is ±10 %
        assert 810 <= success_delay(900, None, {"cache_control": None}, cap_s=21600).delay.total_seconds() <= 990
        hinted = success_delay(900, None, {"cache_control": 3600.0, "ttl": None}, cap_s=21600)
        assert 3240 <= hinted.delay.total_seconds() <= 3960
        assert success_delay(900, None, {"ttl": 10**9}, cap_s=21600).delay.total_seconds() <= 21600 * 1.1
    assert max_age_seconds("public, max-age=1800, must-revalidate") == 1800
    assert max_age_seconds("no-cache") is None


def test_the_next_fetch_names_what_set_it() -> None:
    """The reason shown for a far-off fetch is the delay that set it, with its length; one barely longer
    than the configured interval (1801 s against 1800) is still just the interval."""

    def why(adaptive_s: int | None, **hints: float | None) -> tuple[str, int]:
        upcoming = success_delay(1800, adaptive_s, hints, cap_s=21600)
        return upcoming.reason, upcoming.seconds

    assert why(None, cache_control=None) == ("interval", 1800)
    assert why(1801, cache_control=None) == ("interval", 1801)
    assert why(2000, cache_control=2100) == ("interval", 2100)  # under 1.25 times the interval
    assert why(21600, cache_control=None) == ("adaptive", 21600)
    assert why(3600, cache_control=21600, ttl=None) == ("cache_control", 21600)
    assert why(3600, cache_control=10**9) == ("cache_control", 21600)  # capped, and the cap is shown
    assert why(21600, cache_control=21600) == ("cache_control", 21600)  # a tie: the server's word
    assert why(3600, cache_control=None, ttl=7200) == ("ttl", 7200)
    backoff = failure_delay(1800, 1, None)
    assert (backoff.reason, backoff.seconds) == ("backoff", 3600)
    asked = failure_delay(1800, 1, 7200)
    assert (asked.reason, asked.seconds) == ("retry_after", 7200)
    assert failure_delay(1800, 3, 7200).reason == "backoff"  # 4 h of backoff outlast the 2 h asked
    assert failure_delay(1800, 1, 10**9).seconds == 86400


def test_backoff_grows_exponentially_capped_and_respects_retry_after() -> None:
    delays = [failure_delay(900, n, None).delay.total_seconds() for n in range(1, 12)]
    assert 1800 * 0.9 <= delays[0] <= 1800 * 1.1 and 3600 * 0.9 <= delays[1] <= 3600 * 1.1
    assert max(delays) <= 86400 * 1.1
    assert failure_delay(900, 1, 7200).delay.total_seconds() >= 7200 * 0.9
    assert failure_delay(900, 1, 10**9).delay.total_seconds() <= 86400 * 1.1
    assert retry_after_seconds("120") == 120
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    assert 3500 <= (retry_after_seconds(later) or 0) <= 3600
    assert retry_after_seconds("tomorrow-ish") is None


def test_feed_failing_for_days_is_disabled_with_the_reason(tmp_path: Path) -> None:
    with LoopbackServer("127.0.0.45") as server:
        server.add("/feed.xml", b"down", "text/plain", status=503)
        database_url = f"sqlite:///{tmp_path}/days.db"
        feeds_file = write_feeds(tmp_path / "feeds.yaml", {"broken": server.base + "/feed.xml"})
        cycle(database_url, feeds_file)
        with connected(database_url, write=True) as db:  # pretend the first failure was eight days ago
            db.execute(
                text("UPDATE feeds SET failing_since = :t"),
                {"t": (datetime.now(UTC) - timedelta(days=8)).replace(tzinfo=None)},
            )
        cycle(database_url, feeds_file)
    feed = query(database_url, "SELECT enabled, disabled_reason, consecutive_failures FROM feeds")[0]
    assert not feed["enabled"] and feed["consecutive_failures"] == 2
    assert "failing since" in feed["disabled_reason"] and "HTTP 503" in feed["disabled_reason"]


def test_run_once_runs_the_merge_pass_when_its_schedule_has_fired(tmp_path: Path) -> None:
    """From cron, --once is the whole service: the merge pass runs at the end of a run when the daemon's would
    have run since the last pass (a database never merged: at once), not at the end of every run."""
    database_url = f"sqlite:///{tmp_path}/merge.db"
    yearly = {"merge_schedule": "0 0 1 1 *"}

    def merged_at() -> datetime | None:
        rows = query(database_url, "SELECT value FROM meta WHERE key = 'merged_at'")
        return datetime.fromisoformat(rows[0]["value"]) if rows else None

    with LoopbackServer("127.0.0.46") as server:
        feeds_file = write_feeds(tmp_path / "feeds.yaml", {"bon": good_site(server)})
        report = cycle(database_url, feeds_file, **yearly)
        first = merged_at()
        assert report.articles_added == 1 and first is not None  # never merged: due at once
        cycle(database_url, feeds_file, **yearly)
        assert merged_at() == first  # the schedule has not fired since: no pass
        long_ago = first - timedelta(days=400)
        with connected(database_url, write=True) as db:
            db.execute(text("UPDATE meta SET value = :v WHERE key = 'merged_at'"), {"v": long_ago.isoformat()})
        cycle(database_url, feeds_file, **yearly)
    assert (merged_at() or long_ago) > first  # a new year began since that pass: it ran again
