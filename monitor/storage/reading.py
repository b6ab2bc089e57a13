"""Watch queries, digest selections and digest runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Integer,
    column,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import defer

from monitor.search import Query, fold_name, fts5_match, index_terms
from monitor.storage.dialect import Unit
from monitor.storage.schema import Article, DigestRun, DigestRunStory, Story, utcnow


class DigestQueries(Unit):
    """Watch queries over the corpus, stories for a digest period, and digest runs."""

    def matching(self, query: Query) -> list[ColumnElement[bool]]:
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
        return set(self.session.scalars(select(Article.id).where(*self.matching(query))))

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
            stories = stories.where(Story.id.in_(select(Article.story_id).where(*in_period, *self.matching(query))))
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
                select(Article)
                .options(defer(Article.raw_html))  # a digest shows text, never the page
                .where(Article.story_id == story_id)
                .order_by(Article.published_at, Article.id)
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

    def record_digest_stories(self, run_id: int, story_ids: Sequence[int]) -> None:
        """The stories a sent digest carried, in the order it showed them."""
        self.session.add_all(
            DigestRunStory(run_id=run_id, story_id=story_id, rank=rank) for rank, story_id in enumerate(story_ids, 1)
        )

    def digest_runs(self, *, states: Sequence[str]) -> list[DigestRun]:
        return list(
            self.session.scalars(select(DigestRun).where(DigestRun.state.in_(list(states))).order_by(DigestRun.id))
        )
