"""Sizes of the text columns a value from outside may land in, checked before the database sees it.

SQLite would store anything; PostgreSQL would refuse the whole transaction. Clipping here keeps one
over-long title from costing the batch it arrived with.
"""

from __future__ import annotations

MAX_URL_CHARS = 2048  # URLs and GUIDs: a longer one names no page worth fetching, and is refused
MAX_TITLE_CHARS = 1000
MAX_OUTLET_CHARS = 200  # articles.source, feeds.outlet
MAX_AUTHOR_CHARS = 300
MAX_SITE_NAME_CHARS = 200
MAX_IMPORT_LINE_BYTES = 5 * 1024 * 1024  # MONITOR_IMPORT_MAX_LINE_BYTES' default: a 38 MB line took 1.35 GB


def clip(value: str | None, limit: int) -> str | None:
    """At most ``limit`` characters, an ellipsis marking a cut; None stays None."""
    if value is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"
