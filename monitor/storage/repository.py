"""The repository the pipeline opens: one transaction, every part of the interface."""

from __future__ import annotations

from monitor.storage.queue import FeedQueue
from monitor.storage.reading import DigestQueries
from monitor.storage.story_index import StoryIndex


class Repository(FeedQueue, StoryIndex, DigestQueries):
    """One unit of work (one transaction) over the schema; the only place pipeline data meets SQL."""
