"""The SQL schema (the documented contract users query) and the small interface the pipeline uses.

Pipeline code never writes SQL: it opens a ``Repository`` (one transaction) and calls its
methods. Same schema on SQLite and PostgreSQL; migrations live in monitor/migrations.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import groupby
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    case,
    cast,
    column,
    create_engine,
    delete,
    event,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql.selectable import Select, TextualSelect

from monitor.errors import SchemaOutOfDate, StorageError
from monitor.limits import MAX_URL_CHARS
from monitor.search import Query, fold_name, fts5_match, index_terms
from monitor.stories import Candidate, Member, Placed, StoryParams, StoryState, week_of


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
    event_date: Mapped[date | None] = mapped_column(Date)  # median of its articles' event dates
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when the periodic merge pass found it covers the same event as an older story: its articles
    # moved there, this row stays (article_count 0) to say so.
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id"))
    merge_score: Mapped[float | None] = mapped_column(Float)


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
    minhash: Mapped[bytes] = mapped_column(LargeBinary)
    shingle_count: Mapped[int] = mapped_column(Integer)
    raw_html: Mapped[bytes | None] = mapped_column(LargeBinary)  # zlib-compressed page
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ArticleBand(Base):
    """MinHash LSH buckets: one row per (band hash, article); near-copy candidates share one."""

    __tablename__ = "article_bands"
    band_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True)


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
    band_key: int
    article_id: int
    story_id: int
    minhash: bytes
    shingle_count: int


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
    minhash: bytes
    shingle_count: int
    site_name: str | None = None
    canonical_note: str | None = None


@dataclass(frozen=True)
class PlacementRecord:
    method: str
    score: float | None
    story_id: int | None  # None: found a new story
    matched_article_id: int | None = None
    duplicate_similarity: float | None = None


@dataclass(frozen=True)
class NewRow:
    """An article placed and about to be written: its reserved id, its story and its vector."""

    article_id: int
    new: NewArticle
    placement: PlacementRecord
    story_id: int
    terms: dict[str, float]


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
        if self._postgres():
            # One array parameter, whatever the number of terms, joined: a lookup per term through the key.
            # (`term = ANY(array)` lets the planner scan the whole table, which every batch's df updates
            # keep full of dead rows: 14 ms a call on a 6,000-term table under one-article batches.)
            rows = self.session.execute(
                sql_text(
                    f"SELECT t.term, t.df FROM unnest({_array('terms', 'VARCHAR(64)')}) AS q(term)"
                    " JOIN term_stats t ON t.term = q.term"
                ),
                {"terms": _joined(wanted)},
            )
            return {term: df for term, df in rows}
        found: dict[str, int] = {}
        for chunk in _chunks(wanted, 500):
            found.update(self.session.execute(select(TermStat.term, TermStat.df).where(TermStat.term.in_(chunk))).all())
        return found

    def add_document_terms(self, increments: Mapping[str, int], documents: int) -> None:
        """Count ``documents`` more documents, and for each term how many of them contain it."""
        self._insert_many(
            TermStat, [{"term": term, "df": n} for term, n in sorted(increments.items())], on_conflict="df"
        )
        counter = self._insert()(Meta).values(key="document_count", value=str(documents))
        self.session.execute(
            counter.on_conflict_do_update(
                index_elements=[Meta.key],
                set_={"value": cast(cast(Meta.value, Integer) + documents, Text)},
            )
        )

    def _insert_many(
        self, model: type[Base], rows: Sequence[Mapping[str, Any]], *, on_conflict: str | None = None
    ) -> None:
        """Many rows in one statement. PostgreSQL takes each column as one array (unnest, ``_joined``): one
        round trip and one parse, where executemany costs a round of the driver per row. On a primary-key
        clash, ``on_conflict`` = a column: add its new value to the stored one; ``"replace"``: take the new
        values, and leave a row whose values are the same untouched (no new row version)."""
        if not rows:
            return
        table = _table(model)
        key = [column.name for column in table.primary_key.columns]
        columns = list(rows[0])
        changing = [c for c in columns if c not in key]
        if not self._postgres():
            statement = sqlite_insert(table)
            if on_conflict == "replace":
                statement = statement.on_conflict_do_update(
                    index_elements=key,
                    set_={c: statement.excluded[c] for c in changing},
                    where=or_(*(table.c[c] != statement.excluded[c] for c in changing)),
                )
            elif on_conflict:
                statement = statement.on_conflict_do_update(
                    index_elements=key, set_={on_conflict: table.c[on_conflict] + statement.excluded[on_conflict]}
                )
            self.session.execute(statement, list(rows))
            return
        dialect = self.session.get_bind().dialect
        arrays = ", ".join(_array(c, table.c[c].type.compile(dialect=dialect)) for c in columns)
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
        if on_conflict == "replace":
            sql += (
                f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in changing)}"
                f" WHERE ({', '.join(f'{table.name}.{c}' for c in changing)})"
                f" IS DISTINCT FROM ({', '.join(f'excluded.{c}' for c in changing)})"
            )
        elif on_conflict:
            sql += (
                f" ON CONFLICT ({', '.join(key)}) DO UPDATE"
                f" SET {on_conflict} = {table.name}.{on_conflict} + excluded.{on_conflict}"
            )
        self.session.execute(sql_text(sql), {c: _joined([row[c] for row in rows]) for c in columns})

    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def _insert(self) -> Any:
        return pg_insert if self._postgres() else sqlite_insert

    # --- articles ----------------------------------------------------------
    def article_ids_by_url(self, urls: Iterable[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(sorted(set(urls)), 500):
            found.update(self.session.execute(select(Article.url, Article.id).where(Article.url.in_(chunk))).all())
        return found

    def signature_of(self, article_id: int) -> tuple[int, bytes, int]:
        """(id, MinHash, shingle count) of a stored article."""
        row = self.session.execute(
            select(Article.id, Article.minhash, Article.shingle_count).where(Article.id == article_id)
        ).one()
        return int(row[0]), bytes(row[1]), int(row[2])

    def near_copy_candidates(self, band_keys: Iterable[int]) -> list[NearCopyCandidate]:
        """Stored articles sharing an LSH bucket with any of these keys, one row per (bucket, article)."""
        found: list[NearCopyCandidate] = []
        for chunk in _chunks(sorted(set(band_keys)), 1000):
            rows = self.session.execute(
                select(ArticleBand.band_key, Article.id, Article.story_id, Article.minhash, Article.shingle_count)
                .join(Article, Article.id == ArticleBand.article_id)
                .where(ArticleBand.band_key.in_(chunk))
                .order_by(ArticleBand.band_key, Article.id)
            )
            found.extend(NearCopyCandidate(*row) for row in rows)
        return found

    def add_bands(self, rows: Sequence[tuple[int, int]]) -> None:
        """(band key, article id) pairs into the LSH buckets, in one statement."""
        self._insert_many(ArticleBand, [{"band_key": key, "article_id": article} for key, article in rows])

    def insert_story(self, title: str, published_at: datetime) -> int:
        now = utcnow()
        story_id: int = self.session.execute(
            _table(Story)
            .insert()
            .values(
                title=title,
                first_published_at=published_at,
                last_published_at=published_at,
                article_count=0,
                original_count=0,
                outlet_count=0,
                centroid={},
                created_at=now,
                updated_at=now,
            )
            .returning(_table(Story).c.id)
        ).scalar_one()
        return story_id

    def new_article_ids(self, count: int) -> list[int]:
        """Ids for ``count`` articles about to be added: placement refers to each article by its id before
        ``add_articles`` writes the batch in one statement. (On SQLite, the next ids after the highest: a
        writer that came in between would make this transaction's first write fail, as any read-then-write
        transaction does in WAL mode, before anything is written.)"""
        if count <= 0:
            return []
        if self._postgres():
            return list(
                self.session.scalars(
                    sql_text("SELECT nextval(pg_get_serial_sequence('articles', 'id')) FROM generate_series(1, :n)"),
                    {"n": count},
                )
            )
        top = self.session.scalar(select(func.max(Article.id))) or 0
        return list(range(top + 1, top + 1 + count))

    def add_articles(self, rows: Sequence[NewRow]) -> None:
        """Placed articles, with the ids ``new_article_ids`` gave them, in one statement."""
        if not rows:
            return
        now = utcnow()
        self.session.execute(
            _table(Article).insert(),
            [
                {
                    "id": row.article_id,
                    "url": row.new.url,
                    "title": row.new.title,
                    "text": row.new.text,
                    "source": row.new.source,
                    "site_name": row.new.site_name,
                    "canonical_note": row.new.canonical_note,
                    "author": row.new.author,
                    "published_at": row.new.published_at,
                    "fetched_at": row.new.fetched_at,
                    "event_date": row.new.event_date,
                    "language": row.new.language,
                    "feed_id": row.new.feed_id,
                    "minhash": row.new.minhash,
                    "shingle_count": row.new.shingle_count,
                    "raw_html": zlib.compress(row.new.raw_html.encode("utf-8"), 6)
                    if row.new.raw_html is not None
                    else None,
                    "created_at": now,
                    **_placement_columns(row.placement, row.story_id, row.terms),
                }
                for row in rows
            ],
        )
        if not self._postgres():  # SQLite keeps its own FTS5 index (PostgreSQL indexes the columns directly)
            self.session.execute(
                sql_text("INSERT INTO article_fts (rowid, body) VALUES (:id, :body)"),
                [
                    {"id": row.article_id, "body": " ".join(index_terms(f"{row.new.title}\n{row.new.text}"))}
                    for row in rows
                ],
            )

    def update_placement(
        self, article_id: int, placement: PlacementRecord, story_id: int, terms: dict[str, float]
    ) -> None:
        self.session.execute(
            update(Article).where(Article.id == article_id).values(**_placement_columns(placement, story_id, terms))
        )

    # --- reclustering --------------------------------------------------------
    def articles_between(self, since: datetime | None, until: datetime | None) -> list[Article]:
        query = select(Article)
        if since is not None:
            query = query.where(Article.published_at >= since)
        if until is not None:
            query = query.where(Article.published_at < until)
        return list(self.session.scalars(query.order_by(Article.published_at, Article.id)))

    def detach(self, articles: Sequence[Article], term_sets: Sequence[Iterable[str]]) -> tuple[int, list[int]]:
        """Take articles out of their stories and out of the corpus statistics, to be placed again.

        They wait in a hidden holding story (no article count, so never a candidate); stories left empty
        are deleted; the ids of the stories that keep members are returned with the holding story's."""
        holding = self.insert_story("(reclustering)", utcnow())
        ids = [a.id for a in articles]
        touched = {a.story_id for a in articles}
        for chunk in _chunks(ids, 500):
            self.session.execute(delete(ArticleBand).where(ArticleBand.article_id.in_(chunk)))
            self.session.execute(
                update(Article)
                .where(Article.id.in_(chunk))
                .values(story_id=holding, duplicate_of_id=None, matched_article_id=None, matched_story_id=None)
            )
        removed: Counter[str] = Counter()
        for terms in term_sets:
            removed.update(set(terms))
        for n, group in groupby(sorted(removed.items(), key=lambda kv: kv[1]), key=lambda kv: kv[1]):
            for chunk in _chunks([term for term, _ in group], 500):
                self.session.execute(update(TermStat).where(TermStat.term.in_(chunk)).values(df=TermStat.df - n))
        self.session.execute(delete(TermStat).where(TermStat.df <= 0))
        self.set_meta("document_count", str(max(0, self.document_count() - len(articles))))
        surviving = []
        for story_id in sorted(touched):
            if self.session.scalar(select(Article.id).where(Article.story_id == story_id).limit(1)) is not None:
                surviving.append(story_id)
                continue
            self.session.execute(
                update(Article).where(Article.matched_story_id == story_id).values(matched_story_id=None)
            )
            self.remove_story(story_id)
        return holding, surviving

    def remove_story(self, story_id: int) -> None:
        """Delete a story, and the record of the stories once merged into it (their articles are gone)."""
        while merged := list(self.session.scalars(select(Story.id).where(Story.merged_into_id == story_id))):
            for absorbed in merged:
                self.remove_story(absorbed)
        self.session.execute(delete(StoryTerm).where(StoryTerm.story_id == story_id))
        self.session.execute(delete(Story).where(Story.id == story_id))

    def stories_updated_since(self, since: datetime) -> list[int]:
        return list(
            self.session.scalars(
                select(Story.id).where(Story.article_count > 0, Story.updated_at >= since).order_by(Story.id)
            )
        )

    def merge_stories(self, merges: Sequence[tuple[int, int, float]]) -> None:
        """Move each (absorbed, into, score) story's articles into the other and keep the emptied row as the
        record of the merge; in the order given (a story absorbed after it took in another passes on all),
        three statements for all of them."""
        if not merges:
            return
        articles, stories = _table(Article), _table(Story)
        self.session.execute(
            articles.update().where(articles.c.story_id == bindparam("absorbed")).values(story_id=bindparam("into")),
            [{"absorbed": absorbed, "into": into} for absorbed, into, _ in merges],
        )
        for chunk in _chunks([absorbed for absorbed, _, _ in merges], 500):
            self.session.execute(delete(StoryTerm).where(StoryTerm.story_id.in_(chunk)))
        now = utcnow()
        self.session.execute(
            stories.update()
            .where(stories.c.id == bindparam("absorbed"))
            .values(
                article_count=0,
                original_count=0,
                outlet_count=0,
                merged_into_id=bindparam("into"),
                merge_score=bindparam("score"),
                updated_at=now,
            ),
            [{"absorbed": absorbed, "into": into, "score": score} for absorbed, into, score in merges],
        )

    def story_of(self, article_id: int) -> int:
        return self.session.scalars(select(Article.story_id).where(Article.id == article_id)).one()

    # --- stories -----------------------------------------------------------
    def stories_sharing(
        self, weights: Mapping[str, float], weeks: Sequence[int], limit: int, have: Collection[int] = ()
    ) -> tuple[list[tuple[int, float]], list[Candidate]]:
        """The ``limit`` indexed stories that started in these weeks sharing the most weight with these
        terms (sum of story weight × given weight): (story, weight) best first, ties: the older story. Summed
        in the database (a common term's posting list can hold thousands of stories in a large corpus); the
        stories' rows come back in the same round trip, except those in ``have`` (already read by the
        caller: a batch meets the same stories again and again, and their centroids are the costly part)."""
        if not weights:
            return [], []
        if self._postgres():  # one prepared statement; the terms as one array, joined
            rows = self.session.execute(
                _stories_sharing_pg(),
                {
                    "terms": _joined(weights),
                    "weights": _joined(weights.values()),
                    "weeks": _joined(weeks),
                    "limit": limit,
                    "have": _joined(sorted(have)),
                },
            ).all()
        else:
            stories, terms = _table(Story), _table(StoryTerm)
            total = func.sum(terms.c.weight * case(dict(weights), value=terms.c.term, else_=0.0))
            ranked = (
                select(terms.c.story_id.label("story_id"), total.label("shared"))
                .where(terms.c.term.in_(sorted(weights)), terms.c.week.in_(list(weeks)))
                .group_by(terms.c.story_id)
                .order_by(total.desc(), terms.c.story_id)
                .limit(limit)
                .subquery()
            )
            sid, centroid, *summary = _candidate_columns()
            rows = self.session.execute(
                select(ranked.c.shared, sid, case((stories.c.id.in_(sorted(have)), None), else_=centroid), *summary)
                .join(ranked, ranked.c.story_id == stories.c.id)
                .where(stories.c.article_count > 0)
                .order_by(ranked.c.shared.desc(), stories.c.id)
            ).all()
        return [(row[1], float(row[0])) for row in rows], [Candidate(*row[1:]) for row in rows if row[1] not in have]

    def stories_by_id(self, story_ids: Sequence[int]) -> list[Candidate]:
        """Live stories' summaries as candidates (merged and empty ones left out), in id order."""
        found: list[Candidate] = []
        for chunk in _chunks(sorted(story_ids), 500):
            rows = self.session.execute(
                select(*_candidate_columns()).where(Story.id.in_(chunk), Story.article_count > 0).order_by(Story.id)
            )
            found.extend(Candidate(*row) for row in rows)
        return found

    def story_state(self, story_id: int, centroid: Mapping[str, float] | None = None) -> StoryState:
        """A story with what its members say about it, to be updated as articles join it; ``centroid``: as
        the caller read it already (not decoded again). One prebuilt statement: placement asks for each
        story an article joins."""
        rows = self.session.execute(_story_state_query(centroid is None), {"story_id": story_id}).all()
        if not rows:
            raise StorageError(f"story {story_id} does not exist")
        title, stored = rows[0][:2]
        members = [Member(*row[2:]) for row in rows if row[2] is not None]
        return StoryState(story_id, title, dict(centroid if centroid is not None else stored or {}), members)

    def member_terms(self, story_id: int) -> list[dict[str, float]]:
        """The stored vectors of the story's original (not reprinted) articles."""
        return [
            dict(terms)
            for terms in self.session.scalars(
                select(Article.terms)
                .where(Article.story_id == story_id, Article.duplicate_of_id.is_(None))
                .order_by(Article.published_at, Article.id)
            )
        ]

    def placed_members(self, story_ids: Sequence[int]) -> list[Placed]:
        """The original (not reprinted) articles of these stories with their stored vectors, for refinement."""
        found: list[Placed] = []
        for chunk in _chunks(sorted(story_ids), 500):
            rows = self.session.execute(
                select(Article.id, Article.story_id, Article.published_at, Article.terms, Article.event_date)
                .where(Article.story_id.in_(chunk), Article.duplicate_of_id.is_(None))
                .order_by(Article.id)
            )
            found.extend(Placed(aid, sid, at, dict(terms or {}), event) for aid, sid, at, terms, event in rows)
        return found

    def move_articles(self, moves: Mapping[int, tuple[int, float]]) -> None:
        """Move articles, and their reprints with them, to other stories: {article: (story, score)}. A moved
        article's placement says so (method ``moved``, the score it has there, the story it matched)."""
        if not moves:
            return
        articles = _table(Article)
        self.session.execute(
            articles.update()
            .where(articles.c.id == bindparam("article"))
            .values(
                story_id=bindparam("story"),
                placement_method="moved",
                placement_score=bindparam("score"),
                matched_story_id=bindparam("matched"),
            ),
            [
                {"article": article_id, "story": story_id, "score": score, "matched": story_id}
                for article_id, (story_id, score) in sorted(moves.items())
            ],
        )
        for story_id, group in groupby(
            sorted(moves.items(), key=lambda kv: (kv[1][0], kv[0])), key=lambda kv: kv[1][0]
        ):
            for chunk in _chunks([article_id for article_id, _ in group], 500):
                self.session.execute(
                    update(Article).where(Article.duplicate_of_id.in_(chunk)).values(story_id=story_id)
                )

    def save_stories(self, states: Sequence[StoryState], params: StoryParams) -> None:
        """Write back the summaries of the stories a batch touched, and re-index their heaviest terms."""
        if not states:
            return
        now = utcnow()
        table = _table(Story)
        self.session.execute(
            table.update().where(table.c.id == bindparam("story_id")),
            [
                {
                    "story_id": s.story_id,
                    "title": s.headline,
                    "first_published_at": s.first_published_at,
                    "last_published_at": s.last_published_at,
                    "article_count": len(s.members),
                    "original_count": s.originals,
                    "outlet_count": s.outlet_count,
                    "event_date": s.event_date,
                    "centroid": s.centroid,
                    "updated_at": now,
                }
                for s in states
            ],
        )
        rows = [
            {"story_id": s.story_id, "term": term, "week": week_of(s.first_published_at), "weight": weight}
            for s in states
            for term, weight in s.index_terms(params)
        ]
        self._drop_terms_except(sorted({s.story_id for s in states}), rows)
        self._insert_many(StoryTerm, rows, on_conflict="replace")

    def _drop_terms_except(self, story_ids: Sequence[int], keep: Sequence[Mapping[str, Any]]) -> None:
        """Delete these stories' index rows but those in ``keep``: the terms that left their 30 heaviest."""
        table = _table(StoryTerm)
        if self._postgres():
            self.session.execute(
                sql_text(
                    f"DELETE FROM story_terms st WHERE st.story_id = ANY({_array('stories', 'INTEGER')})"
                    f" AND NOT EXISTS (SELECT 1 FROM unnest({_array('keep_stories', 'INTEGER')},"
                    f" {_array('keep_terms', 'VARCHAR(64)')}) AS k(story_id, term)"
                    " WHERE k.story_id = st.story_id AND k.term = st.term)"
                ),
                {
                    "stories": _joined(story_ids),
                    "keep_stories": _joined(row["story_id"] for row in keep),
                    "keep_terms": _joined(row["term"] for row in keep),
                },
            )
            return
        kept = {(row["story_id"], row["term"]) for row in keep}
        for chunk in _chunks(story_ids, 100):
            members = set(chunk)
            pairs = sorted(pair for pair in kept if pair[0] in members)
            condition = tuple_(table.c.story_id, table.c.term).not_in(pairs) if pairs else true()
            self.session.execute(delete(table).where(table.c.story_id.in_(chunk), condition))

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
            feed.outlet = config.outlet
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
        """Insert items not seen before in this feed; return how many were new.

        An item is its link: a GUID seen before with another link is another article, recorded under a key
        made of both. An item with an ``error`` (an unusable link) is recorded as failed, with the reason."""
        keys = [item.guid for item in items] + [_item_key(item.guid, item.url) for item in items]
        known: dict[str, str | None] = {}
        for chunk in _chunks(sorted(set(keys)), 500):
            rows = self.session.execute(
                select(FeedItem.guid, FeedItem.url).where(FeedItem.feed_id == feed_id, FeedItem.guid.in_(chunk))
            )
            known.update({guid: url for guid, url in rows})
        fresh: list[tuple[str, Any]] = []
        for item in items:
            key = item.guid
            if key in known and known[key] != item.url:
                key = _item_key(item.guid, item.url)
            if key in known:
                continue
            known[key] = item.url
            fresh.append((key, item))
        self.session.add_all(
            FeedItem(
                feed_id=feed_id,
                guid=key,
                url=item.url,
                title=item.title,
                published_at=item.published_at,
                seen_at=now,
                state="failed" if item.error else "pending",
                attempts=1 if item.error else 0,
                last_error=item.error,
                next_attempt_at=now,
            )
            for key, item in fresh
        )
        return len(fresh)

    def claim_feeds(self, now: datetime, lease: timedelta, owner: str, *, only_due: bool) -> list[Feed]:
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
            feed.lease_until, feed.lease_owner = now + lease, owner
        return feeds

    def held_feed(self, feed_id: int, owner: str) -> Feed | None:
        """The feed, locked for this transaction, if ``owner`` still holds its lease; None if another
        worker has taken it over (its result wins)."""
        return self.session.scalars(
            select(Feed).where(Feed.id == feed_id, Feed.lease_owner == owner).with_for_update()
        ).one_or_none()

    def feeds_leased(self, now: datetime) -> int:
        return int(self.session.scalar(select(func.count(Feed.id)).where(Feed.lease_until > now)) or 0)

    def claim_pending_items(
        self, now: datetime, lease: timedelta, owner: str, *, limit: int, max_attempts: int
    ) -> tuple[list[FeedItem], list[FeedItem]]:
        """Lease due pending items to this worker, as claim_feeds does for feeds; (claimed, given up).

        The attempt is counted here, when the work starts: an item whose handling kills its worker comes
        back when the lease expires, and stops, failed, after ``max_attempts`` like any other."""
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
        claimed: list[FeedItem] = []
        given_up: list[FeedItem] = []
        for item in self.session.scalars(query):
            if item.attempts >= max_attempts:
                item.state, item.lease_until, item.lease_owner = "failed", None, None
                item.last_error = f"gave up after {item.attempts} attempts, the last unfinished: {item.last_error}"
                given_up.append(item)
                continue
            item.attempts += 1
            item.lease_until, item.lease_owner = now + lease, owner
            claimed.append(item)
        return claimed, given_up

    def renew_leases(self, owner: str, until: datetime) -> None:
        """Extend what this live worker holds: only a dead worker's leases run out."""
        self.session.execute(
            update(Feed).where(Feed.lease_owner == owner, Feed.lease_until.is_not(None)).values(lease_until=until)
        )
        self.session.execute(
            update(FeedItem)
            .where(FeedItem.lease_owner == owner, FeedItem.state == "pending", FeedItem.lease_until.is_not(None))
            .values(lease_until=until)
        )

    def release_leases(self, owner: str | None = None) -> None:
        """Leases of ``owner`` (a worker stopping), or all of them (SQLite: a killed run's belong to nobody)."""
        for model in (Feed, FeedItem):
            query = update(model).where(model.lease_until.is_not(None))
            if owner is not None:
                query = query.where(model.lease_owner == owner)
            self.session.execute(query.values(lease_until=None, lease_owner=None))

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

    def finish_items(self, done: Sequence[tuple[int, int]], owner: str) -> None:
        """(item, article) pairs: these items are settled, their article stored; one statement. Only items
        ``owner`` still holds: another worker's result is never overwritten."""
        if done:
            table = _table(FeedItem)
            self.session.execute(
                table.update()
                .where(table.c.id == bindparam("item_id"), table.c.lease_owner == owner, table.c.state == "pending")
                .values(
                    state="done", article_id=bindparam("article"), last_error=None, lease_until=None, lease_owner=None
                ),
                [{"item_id": item, "article": article} for item, article in done],
            )

    def held_items(self, item_ids: Sequence[int], owner: str) -> list[FeedItem]:
        """Those of the items ``owner`` still holds, locked for this transaction."""
        return list(
            self.session.scalars(
                select(FeedItem)
                .where(FeedItem.id.in_(item_ids), FeedItem.lease_owner == owner, FeedItem.state == "pending")
                .order_by(FeedItem.id)
                .with_for_update()
            )
        )

    # --- search and digests --------------------------------------------------
    def _matching(self, query: Query) -> list[ColumnElement[bool]]:
        """Conditions on Article for a watch query, composed into the caller's statement: matches are never
        fetched and bound one by one (tens of thousands would pass the engines' parameter limits)."""
        if not self._postgres():
            fts = sql_text("SELECT rowid FROM article_fts WHERE article_fts MATCH :fts_query")
            return [Article.id.in_(fts.bindparams(fts_query=fts5_match(query)).columns(column("rowid", Integer)))]
        document = func.to_tsvector(
            literal_column("'french'::regconfig"),
            func.monitor_unaccent(Article.title.op("||")(literal_column("' '")).op("||")(Article.text)),
        )
        # A word or phrase of stop words only is left out, as fts5_match leaves it out on SQLite.
        conditions: list[ColumnElement[bool]] = [
            document.op("@@")(func.plainto_tsquery(literal_column("'french'::regconfig"), func.monitor_unaccent(t)))
            for t in query.terms
            if index_terms(t)
        ]
        conditions += [
            document.op("@@")(func.phraseto_tsquery(literal_column("'french'::regconfig"), func.monitor_unaccent(p)))
            for p in query.phrases
            if index_terms(p)
        ]
        return conditions

    def search_article_ids(self, query: Query) -> set[int]:
        """Every article matching a watch query (digests compose the same conditions into their own query)."""
        return set(self.session.scalars(select(Article.id).where(*self._matching(query))))

    def stories_for_digest(
        self,
        start: datetime,
        end: datetime,
        *,
        query: Query | None,
        outlets: Sequence[str],
        min_outlets: int,
        limit: int,
    ) -> list[Story]:
        """Stories with coverage in [start, end), ranked by distinct outlets, then recency. With a watch query,
        only those with a matching article published in the period; with outlets, only those one of these
        outlets covered, names compared without case or accents ("numerama" is "Numérama")."""
        stories = select(Story).where(
            Story.last_published_at >= start,
            Story.first_published_at < end,
            Story.outlet_count >= min_outlets,
            Story.article_count > 0,
        )
        if query is not None:
            in_period = (Article.published_at >= start, Article.published_at < end)
            stories = stories.where(Story.id.in_(select(Article.story_id).where(*in_period, *self._matching(query))))
        if outlets:
            wanted = {fold_name(outlet) for outlet in outlets}
            covering = select(Article.source).where(Article.story_id.in_(stories.with_only_columns(Story.id)))
            names = sorted(name for name in self.session.scalars(covering.distinct()) if fold_name(name) in wanted)
            stories = stories.where(Story.id.in_(select(Article.story_id).where(Article.source.in_(names))))
        order = (Story.outlet_count.desc(), Story.last_published_at.desc(), Story.id)
        return list(self.session.scalars(stories.order_by(*order).limit(limit)))

    def story_articles(self, story_id: int) -> list[Article]:
        return list(
            self.session.scalars(
                select(Article).where(Article.story_id == story_id).order_by(Article.published_at, Article.id)
            )
        )

    def record_digest_run(self, digest: str, start: datetime, end: datetime) -> DigestRun:
        """The run for this digest and period, created if it is new (safe when workers race)."""
        self.session.execute(
            self._insert()(DigestRun)
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


def _table(model: type[Base]) -> Table:
    """The Core table of a model, for statements that need no ORM bookkeeping (bulk and hot-path writes)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


@lru_cache(maxsize=2)
def _story_state_query(with_centroid: bool) -> Select[Any]:
    """A story's title (and centroid) on every row of its members, or on one row of nulls if it has none."""
    story, article = _table(Story), _table(Article)
    return (
        select(
            story.c.title,
            story.c.centroid if with_centroid else null(),
            article.c.id,
            article.c.published_at,
            article.c.source,
            article.c.title,
            article.c.event_date,
            article.c.duplicate_of_id.is_not(None),
        )
        .select_from(story.outerjoin(article, article.c.story_id == story.c.id))
        .where(story.c.id == bindparam("story_id"))
        .order_by(article.c.published_at, article.c.id)
    )


@lru_cache(maxsize=1)
def _stories_sharing_pg() -> TextualSelect:
    """Built once: the statement ``Repository.stories_sharing`` runs for every article placed."""
    columns = _candidate_columns()
    return sql_text(
        "SELECT r.shared, s.id, CASE WHEN s.id = ANY(" + _array("have", "INTEGER") + ") THEN NULL ELSE s.centroid END,"
        " s.first_published_at, s.last_published_at, s.event_date, s.original_count"
        " FROM (SELECT st.story_id, SUM(st.weight * q.w) AS shared FROM story_terms st"
        f" JOIN unnest({_array('terms', 'VARCHAR(64)')}, {_array('weights', 'FLOAT8')}) AS q(term, w)"
        f" ON st.term = q.term WHERE st.week = ANY({_array('weeks', 'SMALLINT')})"
        " GROUP BY st.story_id ORDER BY shared DESC, st.story_id LIMIT :limit) AS r"
        " JOIN stories s ON s.id = r.story_id WHERE s.article_count > 0 ORDER BY r.shared DESC, s.id"
    ).columns(column("shared", Float), *(column(c.name, c.type) for c in columns))


_SEPARATOR = "\x1f"  # the ASCII unit separator: in no term, number or timestamp


def _array(parameter: str, sql_type: str) -> str:
    """A PostgreSQL array of ``sql_type`` from a parameter bound to ``_joined`` values. Split and cast in a
    subquery, so that a prepared statement's generic plan does it once, not once per row it meets; the
    outer cast (a no-op) makes ``= ANY(...)`` read it as an array, not as a set of rows."""
    return f"CAST((SELECT CAST(string_to_array(:{parameter}, chr({ord(_SEPARATOR)})) AS {sql_type}[])) AS {sql_type}[])"


def _joined(values: Iterable[Any]) -> str:
    """Values as one string for ``_array``: psycopg dumps a list element by element in Python (6.8 ms for
    three columns of 2,000 values, against 0.1 ms for three strings), and a batch sends thousands."""
    parts = [v if isinstance(v, str) else v.isoformat() if isinstance(v, datetime) else repr(v) for v in values]
    joined = _SEPARATOR.join(parts)
    if joined.count(_SEPARATOR) != max(0, len(parts) - 1):
        raise StorageError(f"a value holds the array separator U+001F: {[p for p in parts if _SEPARATOR in p][:3]}")
    return joined


def _candidate_columns() -> tuple[ColumnElement[Any], ...]:
    """A story as a placement candidate (stories.Candidate's fields), in Core columns: no ORM row loading."""
    c = _table(Story).c
    return (c.id, c.centroid, c.first_published_at, c.last_published_at, c.event_date, c.original_count)


def _placement_columns(placement: PlacementRecord, story_id: int, terms: dict[str, float]) -> dict[str, Any]:
    return {
        "story_id": story_id,
        "placement_method": placement.method,
        "placement_score": placement.score,
        "matched_article_id": placement.matched_article_id,
        "matched_story_id": placement.story_id,
        "duplicate_of_id": placement.matched_article_id if placement.method == "near_copy" else None,
        "duplicate_similarity": placement.duplicate_similarity,
        "terms": terms,
    }


def _lock_key(job: str) -> int:
    """A stable 64-bit advisory lock key per job name."""
    return int.from_bytes(hashlib.blake2b(f"monitor:{job}".encode(), digest_size=8).digest(), "big", signed=True)


def _item_key(guid: str, url: str | None) -> str:
    """A feed item's key when its GUID was seen with another link: the GUID and a digest of the link."""
    return f"{guid[: MAX_URL_CHARS - 18]}#{hashlib.sha1((url or '').encode('utf-8')).hexdigest()[:16]}"


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Storage:
    """Owns the engine; hands out repositories, each one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            # hide_parameters: an error names the statement, never the values (article text, addresses)
            self.engine: Engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise StorageError(f"bad MONITOR_DATABASE_URL {self._without_password(url, e)}") from e
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

    @staticmethod
    def _without_password(url: str, error: Exception) -> str:
        """The URL and the reason it was refused, the password masked in both; a URL that does not even
        parse is not shown at all (where its password starts is unknown)."""
        reason = str(error).splitlines()[0]
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            return f"(not shown): {reason}"
        if parsed.password:
            reason = reason.replace(str(parsed.password), "***")
        return f"{parsed.render_as_string(hide_password=True)!r}: {reason}"

    # --- migrations --------------------------------------------------------
    def _alembic_config(self) -> Any:
        from alembic.config import Config

        config = Config(str(Path(__file__).with_name("alembic.ini")))
        config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        config.attributes["engine"] = self.engine
        return config

    def upgrade(self) -> None:
        """Apply pending migrations. On PostgreSQL under the migration lock: workers starting together and
        `monitor db upgrade` run beside them take turns, and whoever comes second finds nothing to do."""
        from alembic import command

        try:
            with self._migration_lock():
                command.upgrade(self._alembic_config(), "head")
        except SQLAlchemyError as e:
            shown = self.engine.url.render_as_string(hide_password=True)
            raise StorageError(f"migration failed on {shown}: {e}") from e

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """A session-level advisory lock on its own connection (PostgreSQL); SQLite needs none."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        key = {"key": _lock_key("migration")}
        with self.engine.connect() as conn:
            conn.execute(sql_text("SELECT pg_advisory_lock(:key)"), key)
            conn.commit()  # the lock outlives the transaction; an idle open one could hold up a migration
            try:
                yield
            finally:
                conn.execute(sql_text("SELECT pg_advisory_unlock(:key)"), key)

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
        self.upgrade()
