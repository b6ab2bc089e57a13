"""What a reader asks for: a moment (`2d`, `6h` or ISO), a watch query, and a story filter."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from monitor.search import Query, parse_query

_RELATIVE = re.compile(r"^\s*(\d+)\s*(m|min|h|d|j|w)\s*$", re.IGNORECASE)


_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "j": 86400, "w": 7 * 86400}
INT_MAX = 2**31 - 1  # PostgreSQL's integer: ids, and the counts and offsets a query compares with them


def parse_moment(text: str, now: datetime, zone: str, *, end_of_day: bool = False) -> datetime:
    """``2d``, ``6h``, ``30m`` (that long before now), an ISO 8601 date (midnight in ``zone``; with
    ``end_of_day``, the next midnight, so ``--until 2024-11-05`` includes that day) or an ISO 8601 time
    (``zone`` when it has no offset). ValueError says what is accepted."""
    text = text.strip()
    try:
        relative = _RELATIVE.match(text)
        if relative:
            return now - timedelta(seconds=int(relative.group(1)) * _UNITS[relative.group(2).lower()])
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text) + timedelta(days=1 if end_of_day else 0)
            return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))).astimezone(UTC)
    except OverflowError:  # 0001-01-01 in UTC, the day after 9999-12-31, 999999999d ago
        raise ValueError(f"{text!r} is out of range: too far in the past or the future") from None
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use 2d, 6h, 30m, 2024-11-05 or 2024-11-05T09:30+01:00") from None


def check_query(text: str) -> Query:
    """A watch query as digests read it, or ValueError in one line: the syntax is words and "phrases",
    all required, so ``OR``, ``-word`` and an unclosed quote (which would silently mean something else)
    are refused."""
    if text.count('"') % 2:
        raise ValueError('unclosed quote: a phrase is written "like this"')
    outside = re.sub(r'"[^"]*"', " ", text).split()
    if "OR" in outside:
        raise ValueError("OR is not supported: every word must match (run one search per alternative)")
    excluded = [w for w in outside if w.startswith("-") and len(w) > 1]
    if excluded:
        raise ValueError(f"excluding words ({excluded[0]}) is not supported: every word must match")
    return parse_query(text)


@dataclass(frozen=True)
class StoryFilter:
    """Which stories to list: the digest language (period, watch query, outlets, minimum outlets) plus a
    feed tag."""

    since: datetime | None = None
    until: datetime | None = None
    query: Query | None = None
    outlet: str | None = None
    tag: str | None = None
    min_outlets: int = 1
