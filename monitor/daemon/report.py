"""What a cycle did, and how an unexpected error is told: in one line, with its type."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

MAX_ERROR_CHARS = 2000  # an error message kept in last_error


@dataclass
class CycleReport:
    feeds_ok: int = 0
    feeds_failed: int = 0
    items_new: int = 0
    articles_added: int = 0
    stories_started: int = 0  # of the articles added, those that began a story of their own...
    near_copies: int = 0  # ...and those placed as a copy of an earlier article
    items_failed: int = 0
    stories_merged: int = 0
    errors: list[str] = field(default_factory=list)


def placed(report: CycleReport) -> str:
    """How the added articles were placed, "2 new stories, 1 near-copy": the rest joined a story."""
    stories = f"{report.stories_started} new {'story' if report.stories_started == 1 else 'stories'}"
    return f"{stories}, {report.near_copies} near-cop{'y' if report.near_copies == 1 else 'ies'}"


def describe(error: BaseException) -> str:
    """An unexpected error in one line, for the log and the item's last_error: its type and message."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}"[:MAX_ERROR_CHARS] if message else type(error).__name__


def now_utc() -> datetime:
    return datetime.now(UTC)
