"""The SQL schema: the documented contract users query, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which stores naive text) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: all datetimes must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Feed(Base):
    __tablename__ = "feeds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    interval_s: Mapped[int] = mapped_column(Integer)
    language: Mapped[str] = mapped_column(String(16), default="fr")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    robots: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    in_config: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    next_fetch_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # why then: interval, adaptive, cache_control, ttl, backoff, retry_after; null until fetched (since 0014)
    next_fetch_reason: Mapped[str | None] = mapped_column(String(16))
    next_fetch_delay_s: Mapped[int | None] = mapped_column(Integer)  # the delay that reason asked for, unjittered
    etag: Mapped[str | None] = mapped_column(String(512))
    last_modified: Mapped[str | None] = mapped_column(String(128))
    body_hash: Mapped[str | None] = mapped_column(String(64))
    current_interval_s: Mapped[int | None] = mapped_column(Integer)  # adapted to the publishing rate
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_kind: Mapped[str | None] = mapped_column(String(32))
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a worker is fetching it until then
    lease_owner: Mapped[str | None] = mapped_column(String(32))  # that worker's token
    outlet: Mapped[str | None] = mapped_column(String(200))  # credited as articles.source
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FeedItem(Base):
    """Every item seen in a feed, recorded before its article is fetched, so none is lost."""

    __tablename__ = "feed_items"
    __table_args__ = (
        UniqueConstraint("feed_id", "guid"),
        Index("ix_feed_items_state_next", "state", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feeds.id", ondelete="CASCADE"))
    guid: Mapped[str] = mapped_column(String(2048))
    url: Mapped[str | None] = mapped_column(String(2048), index=True)
    title: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # pending → done (article stored or already known) | failed (gave up, reason in last_error)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a worker is fetching it until then
    lease_owner: Mapped[str | None] = mapped_column(String(32))  # that worker's token
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="SET NULL"))


class Story(Base):
    __tablename__ = "stories"
    __table_args__ = (Index("ix_stories_last_published_at", "last_published_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    first_published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    article_count: Mapped[int] = mapped_column(Integer, default=0)
    original_count: Mapped[int] = mapped_column(Integer, default=0)  # articles that are not near-copies
    outlet_count: Mapped[int] = mapped_column(Integer, default=0)
    centroid: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    event_date: Mapped[date | None] = mapped_column(Date)  # what most of its articles' event dates agree on
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when the periodic merge pass found it covers the same event as an older story: its articles
    # moved there, this row stays (article_count 0) to say so. Indexed: a story page lists what merged into it.
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id"), index=True)
    merge_score: Mapped[float | None] = mapped_column(Float)
    # The locked transaction that last changed it (meta ``story_changes`` numbers them): placement, which
    # decides without the cluster lock, asks under it which stories changed since it started.
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0", index=True)


# The ranking of the stories page and digests (outlets, then most recent coverage), over listed stories only.
Index(
    "ix_stories_ranking",
    Story.outlet_count.desc(),
    Story.last_published_at.desc(),
    Story.id,
    postgresql_where=Story.article_count > 0,
    sqlite_where=Story.article_count > 0,
)


class Article(Base):
    __tablename__ = "articles"
    __table_args__ = (Index("ix_articles_published_at", "published_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    title: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(200), index=True)  # the outlet: the feed's, or the import's
    site_name: Mapped[str | None] = mapped_column(String(200))  # as the page declares it
    canonical_note: Mapped[str | None] = mapped_column(Text)  # why the page's canonical link was not its URL
    author: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event_date: Mapped[date | None] = mapped_column(Date)  # when the event happened, from dates in its lead
    language: Mapped[str | None] = mapped_column(String(16))
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), index=True)
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id"), index=True)
    duplicate_similarity: Mapped[float | None] = mapped_column(Float)
    # How the article was placed: near_copy | story_match | new_story; with score and match.
    placement_method: Mapped[str] = mapped_column(String(16))
    placement_score: Mapped[float | None] = mapped_column(Float)
    matched_article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id"))
    matched_story_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id"))
    feed_id: Mapped[int | None] = mapped_column(ForeignKey("feeds.id", ondelete="SET NULL"))
    terms: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # Its weighted term counts: regrouping weighs them again with today's document frequencies, so that an
    # article's vector does not depend on how much of the corpus had arrived before it.
    term_counts: Mapped[dict[str, float] | None] = mapped_column(JSON)
    minhash: Mapped[bytes] = mapped_column(LargeBinary)
    shingle_count: Mapped[int] = mapped_column(Integer)
    raw_html: Mapped[bytes | None] = mapped_column(LargeBinary)  # zlib-compressed page
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ArticleBand(Base):
    """MinHash LSH buckets: one row per (band hash, article); near-copy candidates share one."""

    __tablename__ = "article_bands"
    band_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True)


class StoryEvent(Base):
    """The history of regrouping: every article moved, story split off and story merged, with when and why,
    so that a story id a user kept can be followed to where its articles went."""

    __tablename__ = "story_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # moved | split | merged
    # The story it happened to; a story deleted (retention, recluster) takes its history with it.
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"), index=True)
    # moved: the story the article left; split: the story the new one came out of; merged: the survivor
    other_story_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id", ondelete="SET NULL"), index=True)
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    score: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)


class StoryTerm(Base):
    """The inverted index that finds candidate stories for a new article: each story's heaviest centroid
    terms, partitioned by the week the story started (so a lookup reads only the weeks that matter)."""

    __tablename__ = "story_terms"
    # Weights change with every article a story takes in: kept out of the index, they are updated in place
    # (PostgreSQL: on the same page, which fillfactor leaves room for), so the postings every lookup reads
    # never pile up dead entries between two vacuums.
    __table_args__ = (
        Index("ix_story_terms_lookup", "term", "week", "story_id"),
        {"postgresql_with": {"fillfactor": 50}},
    )
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True)
    term: Mapped[str] = mapped_column(String(64), primary_key=True)
    week: Mapped[int] = mapped_column(Integer)
    weight: Mapped[float] = mapped_column(Float)


class TermStat(Base):
    """Document frequency of each stemmed term, updated as articles arrive (for TF-IDF)."""

    __tablename__ = "term_stats"
    term: Mapped[str] = mapped_column(String(64), primary_key=True)
    df: Mapped[int] = mapped_column(Integer, default=0)


class DigestRun(Base):
    """One digest for one period, recorded before it is sent: the key to sending it at most once."""

    __tablename__ = "digest_runs"
    __table_args__ = (UniqueConstraint("digest", "period_end"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(200))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    # pending → sending → sent | empty (nothing to send) | failed (gave up, reason in last_error)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    story_count: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DigestRunStory(Base):
    """A story a sent digest carried, at its rank: which e-mail told a reader about it."""

    __tablename__ = "digest_run_stories"
    run_id: Mapped[int] = mapped_column(ForeignKey("digest_runs.id", ondelete="CASCADE"), primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True, index=True)
    rank: Mapped[int] = mapped_column(Integer)


class Meta(Base):
    """Key/value facts about the corpus: document count, the MinHash parameters in use."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
