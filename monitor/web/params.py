"""Request parameters shared by the pages and the API: each bad value becomes a 422 naming its field."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Path as PathParam

from monitor.config import load_digests
from monitor.desk.params import INT_MAX, StoryFilter, check_query, parse_moment
from monitor.errors import ConfigError
from monitor.search import Query
from monitor.web.app import field_error

Id = Annotated[int, PathParam(ge=1, le=INT_MAX, description="A row's id (an SQL integer).")]


def moment(name: str, value: str | None, now: datetime, zone: str, *, end_of_day: bool = False) -> datetime | None:
    if not value or not value.strip():
        return None
    try:
        return parse_moment(value, now, zone, end_of_day=end_of_day)
    except ValueError as e:
        raise field_error(name, str(e)) from e


def query(name: str, value: str | None) -> Query | None:
    if not value or not value.strip():
        return None
    try:
        return check_query(value)
    except ValueError as e:
        raise field_error(name, str(e)) from e


def story_filter(
    *,
    since: datetime | None,
    until: datetime | None,
    q: Query | None,
    outlet: str | None,
    tag: str | None,
    min_outlets: int,
    until_name: str = "until",
) -> StoryFilter:
    """The filter, or a 422 naming the end of the period as the user sent it (``to`` on the pages)."""
    if since is not None and until is not None and until <= since:
        raise field_error(until_name, "must be after the start of the period")
    return StoryFilter(since, until, q, (outlet or "").strip() or None, (tag or "").strip() or None, min_outlets)


def configured_digests(feeds_file: Path) -> tuple[list[Any], str | None]:
    """The digests of feeds.yaml, or none and the reason: a broken file is shown, not a failed page."""
    try:
        return list(load_digests(feeds_file)), None
    except ConfigError as e:
        return [], str(e)
