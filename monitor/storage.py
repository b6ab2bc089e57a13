"""The SQL schema (the documented contract users query) and the small interface the pipeline uses.

Pipeline code never writes SQL: it opens a ``Repository`` (one transaction) and calls its
methods. Same schema on SQLite and PostgreSQL; migrations live in monitor/migrations.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

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
    cast,
    create_engine,
    delete,
    event,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from monitor.errors import SchemaOutOfDate, StorageError
from monitor.search import Query, fts5_match, index_terms


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
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="SET NULL"))


class Story(Base):
    __tablename__ = "stories"
    __table_args__ = (Index("ix_stories_last_published_at", "last_published_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    first_published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    article_count: Mapped[int] = mapped_column(Integer, default=0)
    outlet_count: Mapped[int] = mapped_column(Integer, default=0)
    centroid: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    event_date: Mapped[date | None] = mapped_column(Date)  # median of its articles' event dates
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Article(Base):
    __tablename__ = "articles"
    __table_args__ = (Index("ix_articles_published_at", "published_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    title: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(200), index=True)
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
    minhash: Mapped[bytes] = mapped_column(LargeBinary)
    shingle_count: Mapped[int] = mapped_column(Integer)
    raw_html: Mapped[bytes | None] = mapped_column(LargeBinary)  # zlib-compressed page
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ArticleBand(Base):
    """MinHash LSH buckets: one row per (band hash, article); near-copy candidates share one."""

    __tablename__ = "article_bands"
    band_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True)


class TermStat(Base):
    """Document frequency of each stemmed term, updated as articles arrive (for TF-IDF)."""

    __tablename__ = "term_stats"
    term: Mapped[str] = mapped_column(String(64), primary_key=True)
    df: Mapped[int] = mapped_column(Integer, default=0)


class DigestRun(Base):
    """One digest for one period, recorded before it is sent: the key to sending it exactly once."""

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


class Meta(Base):
    """Key/value facts about the corpus: document count, the MinHash parameters in use."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class NearCopyCandidate:
    article_id: int
    story_id: int
    minhash: bytes
    shingle_count: int


@dataclass(frozen=True)
class StoryCandidate:
    story_id: int
    centroid: dict[str, float]
    article_count: int
    first_published_at: datetime
    last_published_at: datetime
    event_date: date | None


@dataclass(frozen=True)
class NewArticle:
    url: str
    title: str
    text: str
    source: str
    author: str | None
    published_at: datetime
    fetched_at: datetime
    event_date: date | None
    language: str | None
    feed_id: int | None
    raw_html: str | None
    terms: dict[str, float]
    minhash: bytes
    shingle_count: int


@dataclass(frozen=True)
class PlacementRecord:
    method: str
    score: float | None
    story_id: int | None  # None: found a new story
    matched_article_id: int | None = None
    duplicate_similarity: float | None = None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Repository:
    """One unit of work (one transaction) over the schema; the only place pipeline data meets SQL."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # --- corpus statistics -------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.session.get(Meta, key)
        return row.value if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.session.merge(Meta(key=key, value=value))

    def document_count(self) -> int:
        return int(self.get_meta("document_count") or 0)

    def document_frequencies(self, terms: Iterable[str]) -> dict[str, int]:
        wanted = sorted(set(terms))
        found: dict[str, int] = {}
        for chunk in _chunks(wanted, 500):
            found.update(self.session.execute(select(TermStat.term, TermStat.df).where(TermStat.term.in_(chunk))).all())
        return found

    def add_document_terms(self, terms: Iterable[str]) -> None:
        """Count one more document containing each of these terms: one upsert statement, run for many rows
        (the statement stays the same from article to article, so it is compiled once)."""
        insert = pg_insert if self.session.get_bind().dialect.name == "postgresql" else sqlite_insert
        upsert = insert(TermStat).on_conflict_do_update(index_elements=[TermStat.term], set_={"df": TermStat.df + 1})
        rows = [{"term": term, "df": 1} for term in sorted(set(terms))]
        if rows:
            self.session.execute(upsert, rows)
        counter = insert(Meta).values(key="document_count", value="1")
        self.session.execute(
            counter.on_conflict_do_update(
                index_elements=[Meta.key], set_={"value": cast(cast(Meta.value, Integer) + 1, Text)}
            )
        )

    # --- articles ----------------------------------------------------------
    def article_id_by_url(self, url: str) -> int | None:
        return self.session.scalar(select(Article.id).where(Article.url == url))

    def near_copy_candidates(self, band_keys: Sequence[int]) -> list[NearCopyCandidate]:
        ids = select(ArticleBand.article_id).where(ArticleBand.band_key.in_(list(band_keys))).distinct()
        rows = self.session.execute(
            select(Article.id, Article.story_id, Article.minhash, Article.shingle_count)
            .where(Article.id.in_(ids))
            .order_by(Article.id)
        )
        return [NearCopyCandidate(*row) for row in rows]

    def _story_for(self, placement: PlacementRecord, title: str, published_at: datetime) -> Story:
        story = self.session.get(Story, placement.story_id) if placement.story_id else None
        if story is None:
            story = Story(
                title=title,
                first_published_at=published_at,
                last_published_at=published_at,
                article_count=0,
                outlet_count=0,
                centroid={},
            )
            self.session.add(story)
            self.session.flush()
        return story

    def add_article(
        self, new: NewArticle, placement: PlacementRecord, band_keys: Sequence[int], story_title: str
    ) -> Article:
        article = Article(
            url=new.url,
            title=new.title,
            text=new.text,
            source=new.source,
            author=new.author,
            published_at=new.published_at,
            fetched_at=new.fetched_at,
            event_date=new.event_date,
            language=new.language,
            feed_id=new.feed_id,
            minhash=new.minhash,
            shingle_count=new.shingle_count,
            raw_html=zlib.compress(new.raw_html.encode("utf-8"), 6) if new.raw_html is not None else None,
        )
        self._place(article, placement, new.terms, story_title)
        self.session.add(article)
        self.session.flush()
        self.session.add_all(ArticleBand(band_key=key, article_id=article.id) for key in sorted(set(band_keys)))
        self._index_for_search(article)
        return article

    def _place(self, article: Article, placement: PlacementRecord, terms: dict[str, float], story_title: str) -> None:
        article.story_id = self._story_for(placement, story_title, article.published_at).id
        article.placement_method, article.placement_score = placement.method, placement.score
        article.matched_article_id, article.matched_story_id = placement.matched_article_id, placement.story_id
        article.duplicate_of_id = placement.matched_article_id if placement.method == "near_copy" else None
        article.duplicate_similarity = placement.duplicate_similarity
        article.terms = terms

    # --- reclustering --------------------------------------------------------
    def articles_between(self, since: datetime | None, until: datetime | None) -> list[Article]:
        query = select(Article)
        if since is not None:
            query = query.where(Article.published_at >= since)
        if until is not None:
            query = query.where(Article.published_at < until)
        return list(self.session.scalars(query.order_by(Article.published_at, Article.id)))

    def detach(self, articles: Sequence[Article], term_sets: Sequence[Iterable[str]]) -> tuple[Story, list[int]]:
        """Take articles out of their stories and out of the corpus statistics, to be placed again.

        They wait in a hidden holding story (no article count, so never a candidate); stories left empty
        are deleted; the ids of the stories that keep members are returned with the holding story."""
        holding = Story(
            title="(reclustering)",
            first_published_at=utcnow(),
            last_published_at=utcnow(),
            article_count=0,
            outlet_count=0,
            centroid={},
        )
        self.session.add(holding)
        self.session.flush()
        ids = [a.id for a in articles]
        touched = {a.story_id for a in articles}
        for chunk in _chunks(ids, 500):
            self.session.execute(delete(ArticleBand).where(ArticleBand.article_id.in_(chunk)))
        for article in articles:
            article.story_id = holding.id
            article.duplicate_of_id = article.matched_article_id = article.matched_story_id = None
        self.session.flush()
        for terms in term_sets:
            unique = sorted(set(terms))
            for chunk in _chunks(unique, 500):
                self.session.execute(update(TermStat).where(TermStat.term.in_(chunk)).values(df=TermStat.df - 1))
        self.session.execute(delete(TermStat).where(TermStat.df <= 0))
        self.set_meta("document_count", str(max(0, self.document_count() - len(articles))))
        surviving = []
        for story_id in sorted(touched):
            if self.story_articles(story_id):
                surviving.append(story_id)
                continue
            self.session.execute(
                update(Article).where(Article.matched_story_id == story_id).values(matched_story_id=None)
            )
            self.session.execute(delete(Story).where(Story.id == story_id))
        return holding, surviving

    def replace_placement(
        self, article: Article, placement: PlacementRecord, terms: dict[str, float], band_keys: Sequence[int]
    ) -> None:
        self._place(article, placement, terms, article.title)
        self.session.add_all(ArticleBand(band_key=key, article_id=article.id) for key in sorted(set(band_keys)))
        self.session.flush()

    def remove_story(self, story_id: int) -> None:
        self.session.execute(delete(Story).where(Story.id == story_id))

    def story_of(self, article_id: int) -> int:
        return self.session.scalars(select(Article.story_id).where(Article.id == article_id)).one()

    # --- stories -----------------------------------------------------------
    def stories_active_between(self, start: datetime, end: datetime) -> list[StoryCandidate]:
        rows = self.session.execute(
            select(
                Story.id,
                Story.centroid,
                Story.article_count,
                Story.first_published_at,
                Story.last_published_at,
                Story.event_date,
            )
            .where(Story.last_published_at >= start, Story.first_published_at <= end, Story.article_count > 0)
            .order_by(Story.id)
        )
        return [StoryCandidate(*row) for row in rows]

    def refresh_story(self, story_id: int, centroid: dict[str, float] | None) -> None:
        """Recompute the story's summary columns from its articles, and store its new centroid (None: keep it)."""
        story = self.session.get_one(Story, story_id)
        first, last, count, outlets = self.session.execute(
            select(
                func.min(Article.published_at),
                func.max(Article.published_at),
                func.count(Article.id),
                func.count(Article.source.distinct()),
            ).where(Article.story_id == story_id)
        ).one()
        earliest_title = self.session.scalar(
            select(Article.title)
            .where(Article.story_id == story_id, Article.duplicate_of_id.is_(None))
            .order_by(Article.published_at, Article.id)
            .limit(1)
        )
        story.first_published_at, story.last_published_at = first, last
        dates = sorted(
            moment
            for moment in self.session.scalars(select(Article.event_date).where(Article.story_id == story_id))
            if moment is not None
        )
        story.event_date = dates[(len(dates) - 1) // 2] if dates else None
        story.article_count = count
        story.outlet_count = outlets
        story.title = earliest_title or story.title
        if centroid is not None:
            story.centroid = centroid
        story.updated_at = utcnow()

    # --- feeds -------------------------------------------------------------
    def sync_feeds(self, configs: Sequence[Any]) -> None:
        """Make the feeds table match feeds.yaml, keeping fetch state of feeds that stay."""
        self.lock_cluster("feeds-sync")  # workers starting together take turns
        existing = {f.name: f for f in self.session.scalars(select(Feed))}
        by_url = {f.url: f for f in existing.values()}
        wanted = {c.name for c in configs}
        for config in configs:
            feed = existing.get(config.name) or by_url.get(config.url)
            if feed is None:
                feed = Feed(name=config.name, url=config.url, next_fetch_at=utcnow(), consecutive_failures=0)
                self.session.add(feed)
            feed.name, feed.url, feed.interval_s = config.name, config.url, config.interval_s
            feed.language, feed.tags, feed.robots, feed.in_config = (
                config.language,
                list(config.tags),
                config.robots,
                True,
            )
            if feed.enabled is None:
                feed.enabled = True
        for name, feed in existing.items():
            if name not in wanted and feed.url not in {c.url for c in configs}:
                feed.in_config = False
        self.session.flush()

    def feeds(self) -> list[Feed]:
        """The feeds of feeds.yaml (feeds removed from it keep their rows and history, marked not in_config)."""
        query = select(Feed).where(Feed.in_config.is_(True))
        return list(self.session.scalars(query.order_by(Feed.next_fetch_at, Feed.id)))

    def feed(self, feed_id: int) -> Feed:
        return self.session.get_one(Feed, feed_id)

    def record_items(self, feed_id: int, items: Sequence[Any], now: datetime) -> int:
        """Insert items not seen before in this feed; return how many were new."""
        guids = [item.guid for item in items]
        known: set[str] = set()
        for chunk in _chunks(guids, 500):
            known.update(
                self.session.scalars(select(FeedItem.guid).where(FeedItem.feed_id == feed_id, FeedItem.guid.in_(chunk)))
            )
        fresh = [item for item in items if item.guid not in known]
        self.session.add_all(
            FeedItem(
                feed_id=feed_id,
                guid=item.guid,
                url=item.url,
                title=item.title,
                published_at=item.published_at,
                seen_at=now,
                state="pending",
                attempts=0,
                next_attempt_at=now,
            )
            for item in fresh
        )
        return len(fresh)

    def claim_feeds(self, now: datetime, lease: timedelta, *, only_due: bool) -> list[Feed]:
        """Lease feeds to this worker: due (or all, for --once), enabled, not leased by a live worker.

        On PostgreSQL rows another worker is claiming are skipped (FOR UPDATE SKIP LOCKED); a lease that
        expires (its worker died) makes the feed claimable again.
        """
        query = select(Feed).where(
            Feed.in_config.is_(True), Feed.enabled.is_(True), or_(Feed.lease_until.is_(None), Feed.lease_until < now)
        )
        if only_due:
            query = query.where(Feed.next_fetch_at <= now)
        feeds = list(
            self.session.scalars(query.order_by(Feed.next_fetch_at, Feed.id).with_for_update(skip_locked=True))
        )
        for feed in feeds:
            feed.lease_until = now + lease
        return feeds

    def claim_pending_items(self, now: datetime, lease: timedelta, limit: int = 1000) -> list[FeedItem]:
        """Lease due pending items to this worker, as claim_feeds does for feeds."""
        query = (
            select(FeedItem)
            .where(
                FeedItem.state == "pending",
                FeedItem.next_attempt_at <= now,
                or_(FeedItem.lease_until.is_(None), FeedItem.lease_until < now),
            )
            .order_by(FeedItem.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        items = list(self.session.scalars(query))
        for item in items:
            item.lease_until = now + lease
        return items

    def release_all_leases(self) -> None:
        """For a single-process database (SQLite): leases left by a killed run belong to nobody."""
        self.session.execute(update(Feed).where(Feed.lease_until.is_not(None)).values(lease_until=None))
        self.session.execute(update(FeedItem).where(FeedItem.lease_until.is_not(None)).values(lease_until=None))

    def try_cluster_lock(self, job: str) -> bool:
        """One worker at a time for a cluster-wide job (PostgreSQL: advisory lock until commit); False if taken."""
        if self.session.get_bind().dialect.name != "postgresql":
            return True
        return bool(self.session.scalar(sql_text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _lock_key(job)}))

    def lock_cluster(self, job: str) -> None:
        """Wait for the cluster-wide lock of ``job`` until this transaction ends (PostgreSQL; no-op on SQLite).

        Take it first in the transaction: under READ COMMITTED every later read then sees what the previous
        holder committed."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(job)})

    def prune(self, before: datetime) -> dict[str, int]:
        """Drop raw HTML of articles fetched before ``before`` and settled feed items seen before it."""
        html = self.session.execute(
            update(Article).where(Article.fetched_at < before, Article.raw_html.is_not(None)).values(raw_html=None)
        )
        items = self.session.execute(
            delete(FeedItem).where(FeedItem.seen_at < before, FeedItem.state.in_(["done", "failed"]))
        )
        return {"raw_html": int(getattr(html, "rowcount", 0)), "feed_items": int(getattr(items, "rowcount", 0))}

    def item(self, item_id: int) -> FeedItem:
        return self.session.get_one(FeedItem, item_id)

    # --- search and digests --------------------------------------------------
    def _index_for_search(self, article: Article) -> None:
        """SQLite keeps its own FTS5 index (PostgreSQL indexes the columns directly)."""
        if self.session.get_bind().dialect.name == "sqlite":
            body = " ".join(index_terms(f"{article.title}\n{article.text}"))
            self.session.execute(
                sql_text("INSERT INTO article_fts (rowid, body) VALUES (:id, :body)"), {"id": article.id, "body": body}
            )

    def search_article_ids(self, query: Query) -> set[int]:
        if self.session.get_bind().dialect.name == "sqlite":
            rows = self.session.execute(
                sql_text("SELECT rowid FROM article_fts WHERE article_fts MATCH :q"), {"q": fts5_match(query)}
            )
            return {row[0] for row in rows}
        document = func.to_tsvector(
            literal_column("'french'::regconfig"),
            func.monitor_unaccent(Article.title.op("||")(literal_column("' '")).op("||")(Article.text)),
        )
        conditions = [
            document.op("@@")(func.plainto_tsquery(literal_column("'french'::regconfig"), func.monitor_unaccent(t)))
            for t in query.terms
        ]
        conditions += [
            document.op("@@")(func.phraseto_tsquery(literal_column("'french'::regconfig"), func.monitor_unaccent(p)))
            for p in query.phrases
        ]
        return set(self.session.scalars(select(Article.id).where(*conditions)))

    def stories_for_digest(
        self,
        start: datetime,
        end: datetime,
        *,
        article_ids: set[int] | None,
        outlets: Sequence[str],
        min_outlets: int,
        limit: int,
    ) -> list[Story]:
        """Stories with coverage in [start, end), ranked by distinct outlets, then recency."""
        query = select(Story).where(
            Story.last_published_at >= start,
            Story.first_published_at < end,
            Story.outlet_count >= min_outlets,
            Story.article_count > 0,
        )
        if article_ids is not None:
            query = query.where(Story.id.in_(select(Article.story_id).where(Article.id.in_(sorted(article_ids)))))
        if outlets:
            query = query.where(Story.id.in_(select(Article.story_id).where(Article.source.in_(list(outlets)))))
        order = (Story.outlet_count.desc(), Story.last_published_at.desc(), Story.id)
        return list(self.session.scalars(query.order_by(*order).limit(limit)))

    def story_articles(self, story_id: int) -> list[Article]:
        return list(
            self.session.scalars(
                select(Article).where(Article.story_id == story_id).order_by(Article.published_at, Article.id)
            )
        )

    def record_digest_run(self, digest: str, start: datetime, end: datetime) -> DigestRun:
        """The run for this digest and period, created if it is new (safe when workers race)."""
        insert = pg_insert if self.session.get_bind().dialect.name == "postgresql" else sqlite_insert
        self.session.execute(
            insert(DigestRun)
            .values(
                digest=digest,
                period_start=start,
                period_end=end,
                state="pending",
                attempts=0,
                next_attempt_at=utcnow(),
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["digest", "period_end"])
        )
        return self.session.scalars(
            select(DigestRun).where(DigestRun.digest == digest, DigestRun.period_end == end)
        ).one()

    def claim_digest_run(self, run_id: int, now: datetime) -> bool:
        """Atomically move a due pending run to 'sending'; False if another worker has it or it is done."""
        result = self.session.execute(
            update(DigestRun)
            .where(DigestRun.id == run_id, DigestRun.state == "pending", DigestRun.next_attempt_at <= now)
            .values(state="sending", claimed_at=now, attempts=DigestRun.attempts + 1)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def digest_run(self, run_id: int) -> DigestRun:
        return self.session.get_one(DigestRun, run_id)

    def digest_runs(self, *, states: Sequence[str]) -> list[DigestRun]:
        return list(
            self.session.scalars(select(DigestRun).where(DigestRun.state.in_(list(states))).order_by(DigestRun.id))
        )

    # --- reading -----------------------------------------------------------
    def story_count(self) -> int:
        return int(self.session.scalar(select(func.count(Story.id)).where(Story.article_count > 0)) or 0)

    def latest_stories(self, limit: int) -> list[tuple[Story, list[str]]]:
        stories = list(
            self.session.scalars(
                select(Story)
                .where(Story.article_count > 0)
                .order_by(Story.last_published_at.desc(), Story.id.desc())
                .limit(limit)
            )
        )
        result = []
        for story in stories:
            outlets = self.session.scalars(
                select(Article.source).where(Article.story_id == story.id).distinct().order_by(Article.source)
            )
            result.append((story, list(outlets)))
        return result


def _lock_key(job: str) -> int:
    """A stable 64-bit advisory lock key per job name."""
    return int.from_bytes(hashlib.blake2b(f"monitor:{job}".encode(), digest_size=8).digest(), "big", signed=True)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Storage:
    """Owns the engine; hands out repositories, each one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise StorageError(f"bad MONITOR_DATABASE_URL {url!r}: {e}") from e
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def repository(self) -> Iterator[Repository]:
        session = self._sessions()
        try:
            yield Repository(session)
            session.commit()
        except SQLAlchemyError as e:
            session.rollback()
            raise StorageError(f"database error: {e}") from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # --- migrations --------------------------------------------------------
    def _alembic_config(self) -> Any:
        from alembic.config import Config

        config = Config(str(Path(__file__).with_name("alembic.ini")))
        config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        config.attributes["engine"] = self.engine
        return config

    def upgrade(self) -> None:
        from alembic import command

        try:
            command.upgrade(self._alembic_config(), "head")
        except SQLAlchemyError as e:
            raise StorageError(f"migration failed on {self.engine.url.render_as_string()}: {e}") from e

    def schema_status(self) -> tuple[str | None, str]:
        """(revision in the database, newest revision shipped)."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as e:
            raise StorageError(f"cannot reach the database: {e}") from e
        return current, head or ""

    def ensure_schema(self, *, upgrade: bool) -> None:
        current, head = self.schema_status()
        if current == head:
            return
        if not upgrade:
            raise SchemaOutOfDate(
                f"database schema is at {current or 'nothing'}, this version needs {head}: run `monitor db upgrade`"
            )
        if self.engine.dialect.name != "postgresql":
            self.upgrade()
            return
        with self.engine.connect() as conn:  # workers starting together: one migrates, the others wait
            conn.execute(sql_text("SELECT pg_advisory_lock(:key)"), {"key": _lock_key("migration")})
            try:
                if self.schema_status()[0] != head:
                    self.upgrade()
            finally:
                conn.execute(sql_text("SELECT pg_advisory_unlock(:key)"), {"key": _lock_key("migration")})
