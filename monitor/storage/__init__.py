"""Storage: the SQL schema users query, and the interface the pipeline uses instead of SQL.

Pipeline code never writes SQL: it opens a ``Repository`` (one transaction) from ``Storage`` and calls
its methods. The repository is assembled from one part per concern:

- ``schema``: the tables (the documented contract); migrations live in monitor/migrations;
- ``records``: the plain records passed in and out;
- ``dialect``: what differs between PostgreSQL and SQLite, and bulk SQL;
- ``queue``: feeds, feed items and their leases;
- ``corpus``: articles, corpus statistics and near-copy buckets;
- ``story_index``: stories, their candidate index, merges and moves;
- ``reading``: watch queries, digest selections and digest runs;
- ``engine``: the engine, sessions and migrations.
"""

from monitor.storage.engine import Storage
from monitor.storage.records import NearCopyCandidate, NewArticle, NewRow, PlacementRecord
from monitor.storage.repository import Repository
from monitor.storage.schema import (
    Article,
    ArticleBand,
    Base,
    DigestRun,
    DigestRunStory,
    Feed,
    FeedItem,
    Meta,
    Story,
    StoryEvent,
    StoryTerm,
    TermStat,
    utcnow,
)
from monitor.storage.story_index import StoryMembers

__all__ = [
    "Article",
    "ArticleBand",
    "Base",
    "DigestRun",
    "DigestRunStory",
    "Feed",
    "FeedItem",
    "Meta",
    "NearCopyCandidate",
    "NewArticle",
    "NewRow",
    "PlacementRecord",
    "Repository",
    "Storage",
    "Story",
    "StoryEvent",
    "StoryMembers",
    "StoryTerm",
    "TermStat",
    "utcnow",
]
