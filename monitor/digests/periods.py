"""Which period a digest run covers: named after the schedule's fire times, so a late start, or a
change of the clocks, neither skips nor doubles an hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from monitor.config import DigestConfig
from monitor.errors import ConfigError


def period_end(now: datetime) -> datetime:
    """Runs are keyed to the minute: every worker firing the same cron minute names the same run."""
    return now.astimezone(UTC).replace(second=0, microsecond=0)


# How far a zone's clock may move at once (DST: 1 h; some zones have moved 2 h): wall-clock fire times that
# close to the edge of a search may name moments on the other side of it.
_CLOCK_CHANGE = timedelta(hours=2)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The moment a wall-clock time names: a time the autumn change repeats counts once, at its first
    occurrence; a time the spring change skips falls after the gap, as the scheduler fires it."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def last_fire(config: DigestConfig, at: datetime) -> datetime | None:
    """The latest time the digest's schedule names at or before ``at``; None if it names none in 30 years.

    The cron expression is matched on the wall clock of the digest's time zone (a UTC trigger over naive
    local times, which has no DST to get wrong), then each wall-clock time is placed with ``_instant``.
    """
    zone = ZoneInfo(config.timezone)
    wall_trigger = CronTrigger.from_crontab(config.schedule, timezone=UTC)
    here = _wall(at, zone)
    for window in (timedelta(hours=4**k) for k in range(10)):  # 1 h, 4 h, … 30 years
        latest = None
        fire = wall_trigger.get_next_fire_time(None, (here - window - _CLOCK_CHANGE).replace(tzinfo=UTC))
        while fire is not None and fire.replace(tzinfo=None) <= here + _CLOCK_CHANGE:
            moment = _instant(fire.replace(tzinfo=None), zone)
            if moment <= at and (latest is None or moment > latest):
                latest = moment
            fire = wall_trigger.get_next_fire_time(None, fire + timedelta(seconds=1))
        if latest is not None:
            return latest
    return None


def scheduled_end(config: DigestConfig, now: datetime) -> datetime:
    """The end of the period a digest firing at ``now`` covers: the latest scheduled time at or before now,
    so a worker firing late, a second worker, or the scheduler firing twice in a repeated hour name one run."""
    end = last_fire(config, now)
    if end is None:
        raise ConfigError(f"{config.schedule!r} names no time before {now:%Y-%m-%d %H:%M}", digest=config.name)
    return end


def period_start(config: DigestConfig, end: datetime) -> datetime:
    """Where the period ending at ``end`` starts.

    When ``period`` is the wall-clock time since the previous scheduled time (a daily 07:00 digest with
    period 24h), the period starts at that previous time, so consecutive periods tile with no gap and no
    overlap: the day the clocks go forward it covers 23 h, the day they go back 25 h. Otherwise (a period
    longer or shorter than the spacing, or an end off the schedule) it is ``period`` before ``end``.
    """
    span = timedelta(seconds=config.period_s)
    previous = last_fire(config, end - timedelta(microseconds=1))
    zone = ZoneInfo(config.timezone)
    if previous is not None and _wall(end, zone) - _wall(previous, zone) == span:
        return previous
    return end - span


def next_fire(config: DigestConfig, now: datetime) -> datetime | None:
    """When the digest's schedule fires next after ``now`` (None if never): the end of the period a
    preview shows filling up."""
    trigger = CronTrigger.from_crontab(config.schedule, timezone=ZoneInfo(config.timezone))
    after = now.astimezone(UTC)
    for _ in range(3):  # stepping in UTC: local-time arithmetic would drop the fold and come back here
        found: datetime | None = trigger.get_next_fire_time(None, after + timedelta(seconds=1))
        if found is None:
            return None
        fire = found.astimezone(UTC)
        # A wall-clock time the autumn change repeats is one run, at its first occurrence (``last_fire``):
        # the second names a period already sent, so the next send is the fire after it.
        if last_fire(config, fire) == fire:
            return fire
        after = fire
    return None
