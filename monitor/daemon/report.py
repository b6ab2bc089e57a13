"""What a cycle did, and how an unexpected error is told: in one line, with its type."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from monitor.desk.rows import plural

MAX_ERROR_CHARS = 2000  # an error message kept in last_error


@dataclass
class CycleReport:
    feeds_ok: int = 0
    feeds_failed: int = 0
    items_new: int = 0
    added_ids: list[int] = field(default_factory=list)  # the articles added, to count their stories at the end
    stories: int = 0  # the stories they are in once the cycle is over (``count_stories``)
    near_copies: int = 0  # of the articles added, those placed as a copy of an earlier article
    items_failed: int = 0
    stories_merged: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def articles_added(self) -> int:
        return len(self.added_ids)


def placed(report: CycleReport) -> str:
    """Where the added articles went: "3 articles added in 2 stories (1 near-copy)"."""
    stories, copies = plural(report.stories, "story", "stories"), plural(report.near_copies, "near-copy", "near-copies")
    return f"{plural(report.articles_added, 'article')} added in {stories} ({copies})"


def describe(error: BaseException) -> str:
    """An unexpected error in one line, for the log and the item's last_error: its type and message."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}"[:MAX_ERROR_CHARS] if message else type(error).__name__


def now_utc() -> datetime:
    return datetime.now(UTC)
