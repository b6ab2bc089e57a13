"""The read model: every query the web pages, the JSON API and the CLI show.

Read-only by construction: ``Desk`` opens its own engine with writes refused by the database itself
(SQLite ``PRAGMA query_only``, PostgreSQL ``default_transaction_read_only``), so a page can never change
what the pipeline stores."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Select, create_engine, event, func, or_, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, aliased, load_only

from monitor.config import DigestConfig
from monitor.desk.params import StoryFilter
from monitor.desk.rows import (
    ArticleRow,
    DigestMention,
    FeedRow,
    ItemRow,
    MergedStory,
    Page,
    RunRow,
    SearchHit,
    Segment,
    StoryDetail,
    StoryEventRow,
    StoryRow,
)
from monitor.desk.snippets import highlight, snippet
from monitor.digests.build import Digest, compose, lead_of, representative
from monitor.digests.periods import next_fire, period_start
from monitor.errors import ConfigError, StorageError
from monitor.search import Query, fold_name, index_terms
from monitor.storage import (
    Article,
    DigestRun,
    DigestRunStory,
    Feed,
    FeedItem,
    Repository,
    Storage,
    Story,
    StoryEvent,
)
from monitor.storage.engine import EngineOwner, bad_url

COUNT_CAP = 10_000  # stories counted past a page's offset; beyond it a listing says "more than"
HISTORY_LIMIT = 200  # story_events shown on a story page


def _read_only_engine(url: str) -> Engine:
    """An engine on which the database itself refuses writes; a SQLite file that does not exist is an
    error (opening it would create it)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise bad_url(url, e) from e
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).is_file():
            raise StorageError(f"no database at {path}: run `monitor run` or `monitor import` first")
        engine = create_engine(url, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _query_only(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA query_only=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    options = {"options": "-c default_transaction_read_only=on"} if parsed.get_backend_name() == "postgresql" else {}
    try:
        return create_engine(url, hide_parameters=True, pool_pre_ping=True, connect_args=options)
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise bad_url(url, e) from e


def _outlets(session: Session) -> list[str]:
    """Every outlet stored, found by hopping along ix_articles_source from one name to the next (a
    recursive query: one index probe per outlet, where DISTINCT reads every article)."""
    hop = select(func.min(Article.source).label("source")).cte("outlet", recursive=True)
    following = aliased(Article)
    hop = hop.union_all(
        select(select(func.min(following.source)).where(following.source > hop.c.source).scalar_subquery()).where(
            hop.c.source.is_not(None)
        )
    )
    return [n for n in session.scalars(select(hop.c.source)) if n is not None]


def _history(session: Session, story_id: int) -> list[StoryEventRow]:
    """The story's regrouping history (story_events on either side), newest first, HISTORY_LIMIT at most."""
    events = list(
        session.scalars(
            select(StoryEvent)
            .where(or_(StoryEvent.story_id == story_id, StoryEvent.other_story_id == story_id))
            .order_by(StoryEvent.at.desc(), StoryEvent.id.desc())
            .limit(HISTORY_LIMIT)
        )
    )
    if not events:
        return []
    counterparts = {e.other_story_id if e.story_id == story_id else e.story_id for e in events} - {None}
    titles = {i: t for i, t in session.execute(select(Story.id, Story.title).where(Story.id.in_(counterparts)))}
    article_ids = {e.article_id for e in events if e.article_id is not None}
    articles = {i: t for i, t in session.execute(select(Article.id, Article.title).where(Article.id.in_(article_ids)))}
    rows = []
    for e in events:
        counterpart = e.other_story_id if e.story_id == story_id else e.story_id
        receiver = e.other_story_id if e.kind == "merged" else e.story_id
        rows.append(
            StoryEventRow(
                e.at,
                e.kind,
                e.story_id,
                e.other_story_id,
                e.article_id,
                e.score,
                e.reason,
                receiver == story_id,
                counterpart,
                titles.get(counterpart) if counterpart is not None else None,
                articles.get(e.article_id) if e.article_id is not None else None,
            )
        )
    return rows


class Desk(EngineOwner):
    """Read-only queries over the stored stories, feeds and digest runs."""

    def __init__(self, url: str, *, timezone: str = "Europe/Paris") -> None:
        self.url, self.timezone = url, timezone
        self.engine = _read_only_engine(url)

    def check_schema(self) -> None:
        """Refuse an out-of-date schema (upgrading is a write: `monitor db upgrade` does it)."""
        with Storage(self.url) as storage:
            current, head = storage.schema_status()
        if current != head:
            raise StorageError(
                f"database schema is at {current or 'nothing'}, this version needs {head}: run `monitor db upgrade`"
            )

    @contextmanager
    def _session(self) -> Iterator[Session]:
        session = Session(self.engine)
        try:
            yield session
        except SQLAlchemyError as e:
            raise StorageError(f"database error: {' '.join(str(e).split())}") from e
        finally:
            session.rollback()
            session.close()

    # --- stories ---------------------------------------------------------------------------------------

    def _filtered(self, session: Session, where: StoryFilter) -> Select[Any]:
        """Ids of the stories the filter keeps (the digest selection, plus tag and an open-ended period)."""
        stories = select(Story.id).where(Story.article_count > 0, Story.outlet_count >= where.min_outlets)
        in_period: list[ColumnElement[bool]] = []
        if where.since is not None:
            stories = stories.where(Story.last_published_at >= where.since)
            in_period.append(Article.published_at >= where.since)
        if where.until is not None:
            stories = stories.where(Story.first_published_at < where.until)
            in_period.append(Article.published_at < where.until)
        if where.query is not None:
            matching = Repository(session).matching(where.query)
            stories = stories.where(Story.id.in_(select(Article.story_id).where(*in_period, *matching)))
        if where.outlet:
            wanted = fold_name(where.outlet)
            names = [n for n in _outlets(session) if fold_name(n) == wanted]
            stories = stories.where(Story.id.in_(select(Article.story_id).where(Article.source.in_(names))))
        if where.tag:
            feeds = [f for f, tags in session.execute(select(Feed.id, Feed.tags)) if where.tag in (tags or [])]
            stories = stories.where(Story.id.in_(select(Article.story_id).where(Article.feed_id.in_(feeds))))
        return stories

    def _story_rows(self, session: Session, ids: Sequence[int]) -> list[StoryRow]:
        """Rows for these stories, in the given order, each with its outlets."""
        if not ids:
            return []
        outlets: dict[int, list[str]] = {}
        for story_id, source in session.execute(
            select(Article.story_id, Article.source).where(Article.story_id.in_(ids)).distinct()
        ):
            outlets.setdefault(story_id, []).append(source)
        by_id = {s.id: s for s in session.scalars(select(Story).where(Story.id.in_(ids)))}
        return [
            StoryRow(
                s.id,
                s.title,
                s.first_published_at,
                s.last_published_at,
                s.article_count,
                s.original_count,
                s.outlet_count,
                sorted(outlets.get(s.id, []), key=fold_name),
            )
            for s in (by_id[i] for i in ids)
        ]

    def _page_ids(self, session: Session, where: StoryFilter, offset: int, limit: int) -> tuple[list[int], int, bool]:
        """One page of the ranked ids (read along ix_stories_ranking), and the total counted up to
        COUNT_CAP past the page: (ids, total, exact)."""
        kept = self._filtered(session, where)
        ranked = kept.order_by(Story.outlet_count.desc(), Story.last_published_at.desc(), Story.id)
        ids = list(session.scalars(ranked.offset(offset).limit(limit)))
        counted = session.scalar(select(func.count()).select_from(kept.limit(offset + COUNT_CAP + 1).subquery()))
        total = counted or 0
        if total > offset + COUNT_CAP:
            return ids, offset + COUNT_CAP, False
        return ids, total, True

    def stories(self, where: StoryFilter, *, offset: int = 0, limit: int = 20) -> Page[StoryRow]:
        """Stories ranked as in digests: by distinct outlets, then most recent coverage."""
        with self._session() as session:
            ids, total, exact = self._page_ids(session, where, offset, limit)
            return Page(self._story_rows(session, ids), total, offset, limit, exact)

    def search(self, query: Query, where: StoryFilter, *, offset: int = 0, limit: int = 20) -> Page[SearchHit]:
        """Stories whose coverage matches the query, ranked as stories are, each with a highlighted snippet
        from its first matching article."""
        where = dataclasses.replace(where, query=query)
        stems = {stem for part in (*query.terms, *query.phrases) for stem in index_terms(part)}
        with self._session() as session:
            ids, total, exact = self._page_ids(session, where, offset, limit)
            rows = self._story_rows(session, ids)
            matching = Repository(session).matching(query)
            first: dict[int, Any] = {}
            for found in session.execute(
                select(Article.id, Article.story_id, Article.source, Article.title, Article.text)
                .where(Article.story_id.in_(ids), *matching)
                .order_by(Article.published_at, Article.id)
            ):
                first.setdefault(found.story_id, found)
            hits = []
            for row in rows:
                article = first.get(row.id)
                if article is None:  # matched only outside the period: show the story's own title
                    hits.append(SearchHit(row, 0, "", [Segment(row.title, False)], []))
                    continue
                hits.append(
                    SearchHit(
                        row,
                        article.id,
                        article.source,
                        highlight(article.title, stems),
                        snippet(article.text, stems),
                    )
                )
            return Page(hits, total, offset, limit, exact)

    def story(self, story_id: int) -> StoryDetail | None:
        with self._session() as session:
            story = session.get(Story, story_id)
            if story is None:
                return None
            loaded = list(
                session.scalars(
                    select(Article)
                    .options(load_only(*_ARTICLE_COLUMNS, Article.terms, Article.text))
                    .where(Article.story_id == story_id)
                    .order_by(Article.published_at, Article.id)
                )
            )
            merged = session.scalars(
                select(Story).where(Story.merged_into_id == story_id).order_by(Story.updated_at, Story.id)
            )
            return StoryDetail(
                story.id,
                story.title,
                lead_of(representative(loaded, story.centroid or {}).text) if loaded else "",
                story.first_published_at,
                story.last_published_at,
                story.article_count,
                story.original_count,
                story.outlet_count,
                story.merged_into_id,
                story.merge_score,
                [_article_row(a) for a in loaded],
                [MergedStory(m.id, m.title, story_id, m.merge_score, m.updated_at) for m in merged],
                [
                    DigestMention(run.digest, run.period_end, run.sent_at, rank)
                    for run, rank in session.execute(
                        select(DigestRun, DigestRunStory.rank)
                        .join(DigestRunStory, DigestRunStory.run_id == DigestRun.id)
                        .where(DigestRunStory.story_id == story_id)
                        .order_by(DigestRun.period_end.desc(), DigestRun.id)
                    )
                ],
                _history(session, story_id),
            )

    def outlets(self) -> list[str]:
        with self._session() as session:
            return sorted(_outlets(session), key=fold_name)

    def next_digest(self, config: DigestConfig, now: datetime) -> Digest | None:
        """What the digest's next run would carry if it were sent now: the stories of its period so far
        (None when its schedule never fires again)."""
        end = next_fire(config, now)
        if end is None:
            return None
        with self._session() as session:
            return compose(Repository(session), config, period_start(config, end), end)

    def tags(self) -> list[str]:
        with self._session() as session:
            return sorted({t for tags in session.scalars(select(Feed.tags).where(Feed.in_config)) for t in tags or []})

    # --- feeds, items, digests ---------------------------------------------------------------------------

    def feeds(self) -> list[FeedRow]:
        """The feeds of feeds.yaml, worst first, with how many items each has pending and given up."""
        with self._session() as session:
            counts: dict[tuple[int, str], int] = {
                (feed_id, state): n
                for feed_id, state, n in session.execute(
                    select(FeedItem.feed_id, FeedItem.state, func.count())
                    .where(FeedItem.state.in_(("pending", "failed")))
                    .group_by(FeedItem.feed_id, FeedItem.state)
                )
            }
            feeds = session.scalars(
                select(Feed).where(Feed.in_config).order_by(Feed.consecutive_failures.desc(), Feed.name)
            )
            return [_feed_row(f, counts.get((f.id, "pending"), 0), counts.get((f.id, "failed"), 0)) for f in feeds]

    def feed(self, feed_id: int) -> FeedRow | None:
        return next((f for f in self.feeds() if f.id == feed_id), None)

    def items(
        self, *, states: Sequence[str] = ("pending", "failed"), feed: str | int | None = None, limit: int = 200
    ) -> Page[ItemRow]:
        """Items in these states (stuck work first: most attempts, then oldest), optionally of one feed (by
        id, or by name without case or accents); ConfigError for an unknown feed."""
        with self._session() as session:
            conditions: list[ColumnElement[bool]] = [FeedItem.state.in_(list(states))]
            if feed is not None:
                feeds: dict[int, str] = {i: n for i, n in session.execute(select(Feed.id, Feed.name))}
                ids = [i for i, n in feeds.items() if feed in (i, n) or fold_name(n) == fold_name(str(feed))]
                if not ids:
                    raise ConfigError(f"no feed {feed!r} (known: {', '.join(sorted(feeds.values())) or 'none'})")
                conditions.append(FeedItem.feed_id.in_(ids))
            total = session.scalar(select(func.count()).select_from(FeedItem).where(*conditions)) or 0
            rows = session.execute(
                select(FeedItem, Feed.name)
                .join(Feed, Feed.id == FeedItem.feed_id)
                .where(*conditions)
                .order_by(FeedItem.state, FeedItem.attempts.desc(), FeedItem.seen_at, FeedItem.id)
                .limit(limit)
            )
            items = [
                ItemRow(
                    i.id,
                    i.feed_id,
                    name,
                    i.guid,
                    i.url,
                    i.title,
                    i.published_at,
                    i.seen_at,
                    i.state,
                    i.attempts,
                    i.next_attempt_at,
                    i.last_error,
                    i.article_id,
                )
                for i, name in rows
            ]
            return Page(items, total, 0, limit)

    def pending_items(self) -> int:
        with self._session() as session:
            return session.scalar(select(func.count()).select_from(FeedItem).where(FeedItem.state == "pending")) or 0

    def digest_runs(self, *, limit: int = 50) -> list[RunRow]:
        with self._session() as session:
            runs = session.scalars(select(DigestRun).order_by(DigestRun.period_end.desc(), DigestRun.id).limit(limit))
            return [
                RunRow(
                    r.id,
                    r.digest,
                    r.period_start,
                    r.period_end,
                    r.state,
                    r.attempts,
                    r.last_error,
                    r.story_count,
                    r.message_id,
                    r.sent_at,
                )
                for r in runs
            ]


_ARTICLE_COLUMNS = (
    Article.id,
    Article.url,
    Article.title,
    Article.source,
    Article.published_at,
    Article.story_id,
    Article.duplicate_of_id,
    Article.duplicate_similarity,
    Article.placement_method,
    Article.placement_score,
    Article.matched_story_id,
    Article.matched_article_id,
    Article.feed_id,
)


def _article_row(a: Article) -> ArticleRow:
    return ArticleRow(
        a.id,
        a.url,
        a.title,
        a.source,
        a.published_at,
        a.story_id,
        a.duplicate_of_id,
        a.duplicate_similarity,
        a.placement_method,
        a.placement_score,
        a.matched_story_id,
        a.matched_article_id,
        a.feed_id,
    )


def _feed_row(f: Feed, pending: int, failed: int) -> FeedRow:
    state = "disabled" if not f.enabled else "failing" if f.consecutive_failures else "ok"
    return FeedRow(
        f.id,
        f.name,
        f.url,
        f.outlet,
        list(f.tags or []),
        f.enabled,
        f.disabled_reason,
        f.interval_s,
        f.current_interval_s,
        f.next_fetch_at,
        f.next_fetch_reason or ("backoff" if f.consecutive_failures else "interval"),
        f.next_fetch_delay_s,
        f.consecutive_failures,
        f.failing_since,
        f.last_error,
        f.last_error_kind,
        f.last_success_at,
        pending,
        failed,
        state,
    )
