"""The corpus as placement reads and writes it."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    func,
    select,
    update,
)
from sqlalchemy import text as sql_text

from monitor.search import index_terms
from monitor.storage.dialect import BAND_KEYS_IN_LIST, Unit, _array, _chunks, _joined, _table
from monitor.storage.records import NearCopyCandidate, NewRow, PlacementRecord
from monitor.storage.schema import Article, ArticleBand, TermStat, utcnow


class Corpus(Unit):
    """Articles as placement writes them: corpus statistics, near-copy buckets, new articles and their placement."""

    def document_count(self) -> int:
        return int(self.get_meta("document_count") or 0)

    def document_frequencies(self, terms: Iterable[str]) -> dict[str, int]:
        wanted = sorted(set(terms))
        if not wanted:  # a regrouping's placer has no batch of its own
            return {}
        # One parameter, whatever the number of terms, joined: a lookup per term through the key. PostgreSQL
        # takes an array (`term = ANY(array)` lets the planner scan the whole table, which every batch's df
        # updates keep full of dead rows: 14 ms a call on a 6,000-term table under one-article batches);
        # SQLite, JSON (an IN list of thousands of terms cost SQLAlchemy more to build than SQLite to answer).
        if self._postgres():
            source, bound = f"unnest({_array('terms', 'VARCHAR(64)')}) AS q(term)", _joined(wanted)
        else:
            source, bound = "(SELECT value AS term FROM json_each(:terms)) AS q", json.dumps(wanted)
        rows = self.session.execute(
            sql_text(f"SELECT t.term, t.df FROM {source} JOIN term_stats t ON t.term = q.term"), {"terms": bound}
        )
        return {term: df for term, df in rows}

    def add_document_terms(self, increments: Mapping[str, int], documents: int) -> None:
        """Count ``documents`` more documents, and for each term how many of them contain it."""
        self._insert_many(
            TermStat, [{"term": term, "df": n} for term, n in sorted(increments.items())], on_conflict="df"
        )
        self.add_to_meta("document_count", documents)

    def article_ids_by_url(self, urls: Iterable[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(sorted(set(urls))):
            found.update(self.session.execute(select(Article.url, Article.id).where(Article.url.in_(chunk))).all())
        return found

    def stories_holding(self, article_ids: Iterable[int]) -> set[int]:
        """The stories these articles are in now (after any regrouping)."""
        found: set[int] = set()
        for chunk in _chunks(sorted(set(article_ids))):
            found.update(self.session.scalars(select(Article.story_id).where(Article.id.in_(chunk)).distinct()))
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
        for chunk in _chunks(sorted(set(band_keys)), BAND_KEYS_IN_LIST):
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
                    **_placement_columns(row.placement, row.story_id, row.terms, row.counts),
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
        self,
        article_id: int,
        placement: PlacementRecord,
        story_id: int,
        terms: dict[str, float],
        counts: Mapping[str, float],
    ) -> None:
        columns = _placement_columns(placement, story_id, terms, counts)
        self.session.execute(update(Article).where(Article.id == article_id).values(**columns))


def _placement_columns(
    placement: PlacementRecord, story_id: int, terms: dict[str, float], counts: Mapping[str, float]
) -> dict[str, Any]:
    return {
        "story_id": story_id,
        "placement_method": placement.method,
        "placement_score": placement.score,
        "matched_article_id": placement.matched_article_id,
        "matched_story_id": placement.story_id,
        "duplicate_of_id": placement.matched_article_id if placement.method == "near_copy" else None,
        "duplicate_similarity": placement.duplicate_similarity,
        "terms": terms,
        "term_counts": {term: round(count, 3) for term, count in sorted(counts.items())},
    }
