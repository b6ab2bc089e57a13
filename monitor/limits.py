"""Sizes of the text columns a value from outside may land in, and the characters they cannot hold,
checked before the database sees it.

SQLite would store anything; PostgreSQL would refuse the whole transaction. Clipping here keeps one
over-long title, or one NUL in it, from costing the batch it arrived with.
"""

from __future__ import annotations

import re

MAX_URL_CHARS = 2048  # URLs and GUIDs: a longer one names no page worth fetching, and is refused
MAX_TITLE_CHARS = 1000
MAX_OUTLET_CHARS = 200  # articles.source, feeds.outlet
MAX_FEED_NAME_CHARS = 200  # feeds.name
MAX_AUTHOR_CHARS = 300
MAX_SITE_NAME_CHARS = 200
MAX_IMPORT_LINE_BYTES = 5 * 1024 * 1024  # MONITOR_IMPORT_MAX_LINE_BYTES' default: a 38 MB line took 1.35 GB


# Control characters (C0 and DEL): PostgreSQL text cannot hold NUL, and a title, a name, a GUID or a URL has
# no use for the others. As a str.translate table, the whitespace ones (tab, line breaks) become a space.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROLS = {c: " " if chr(c).isspace() else None for c in range(128) if CONTROL.match(chr(c))}


def without_controls(value: str) -> str:
    return value.translate(_CONTROLS)


def clip(value: str | None, limit: int) -> str | None:
    """At most ``limit`` characters, an ellipsis marking a cut, and no control characters; None stays None."""
    if value is None:
        return None
    value = without_controls(value)
    return value if len(value) <= limit else value[: limit - 1] + "…"
