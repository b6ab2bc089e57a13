"""Stories and the story_terms index that finds candidate stories for an article."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import groupby
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    bindparam,
    column,
    delete,
    func,
    insert,
    null,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import defer
from sqlalchemy.sql.selectable import Select, TextualSelect

from monitor.errors import StorageError
from monitor.grouping.features import week_of
from monitor.grouping.merging import Placed
from monitor.grouping.params import StoryParams
from monitor.grouping.state import Candidate, Member, StoryState
from monitor.storage.corpus import Corpus
from monitor.storage.dialect import STORY_PAIRS_IN_LIST, _array, _chunks, _joined, _table
from monitor.storage.schema import Article, ArticleBand, Story, StoryEvent, StoryTerm, TermStat, utcnow

DETACH_CHUNK = 1000  # articles read per statement when reclustering takes them out of their stories
STORY_CHANGES = "story_changes"  # meta key: how many locked transactions have changed stories


@dataclass
class StoryMembers:
    """A story's members as stored (``StoryIndex.members_of``)."""

    title: str
    members: list[Member]  # in publication order (then id)
    vectors: dict[int, dict[str, float]]  # the stored vector of each original member
    reprinted: dict[int, int]  # reprint -> the article it copies


class StoryIndex(Corpus):  # reclustering takes articles out of the corpus statistics
    """Stories: the candidate index (story_terms), their state and members, merges, moves and reclustering."""

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

    def detach_between(
        self, since: datetime | None, until: datetime | None, terms_of: Callable[[str, str], Iterable[str]]
    ) -> tuple[int, list[int], int]:
        """Take the articles published in [since, until) out of their stories and out of the corpus statistics,
        to be placed again; streamed, a chunk of rows at a time, and never reading ``raw_html``.

        They wait in a hidden holding story (no article count, so never a candidate); stories left empty are
        deleted. Their terms come from the stored term counts, or ``terms_of(title, text)`` for articles
        stored before counts were kept. Returns the holding story, the stories that keep members, and the
        number of articles detached."""
        holding = self.insert_story("(reclustering)", utcnow())
        within = [Article.story_id != holding]
        if since is not None:
            within.append(Article.published_at >= since)
        if until is not None:
            within.append(Article.published_at < until)
        removed: Counter[str] = Counter()
        touched: set[int] = set()
        count, after = 0, 0
        while rows := self.session.execute(
            select(Article.id, Article.story_id, Article.term_counts)
            .where(*within, Article.id > after)
            .order_by(Article.id)
            .limit(DETACH_CHUNK)
        ).all():
            after = rows[-1].id
            count += len(rows)
            touched.update(row.story_id for row in rows)
            missing = [row.id for row in rows if row.term_counts is None]
            for row in rows:
                if row.term_counts is not None:
                    removed.update(set(row.term_counts))
            for chunk in _chunks(missing):
                texts = self.session.execute(select(Article.title, Article.text).where(Article.id.in_(chunk)))
                for title, body in texts:
                    removed.update(set(terms_of(title, body)))
            ids = [row.id for row in rows]
            self.session.execute(delete(ArticleBand).where(ArticleBand.article_id.in_(ids)))
            self.session.execute(
                update(Article)
                .where(Article.id.in_(ids))
                .values(story_id=holding, duplicate_of_id=None, matched_article_id=None, matched_story_id=None)
            )
        for n, group in groupby(sorted(removed.items(), key=lambda kv: kv[1]), key=lambda kv: kv[1]):
            for chunk in _chunks([term for term, _ in group]):
                self.session.execute(update(TermStat).where(TermStat.term.in_(chunk)).values(df=TermStat.df - n))
        self.session.execute(delete(TermStat).where(TermStat.df <= 0))
        self.set_meta("document_count", str(max(0, self.document_count() - count)))
        surviving = []
        for story_id in sorted(touched):
            if self.session.scalar(select(Article.id).where(Article.story_id == story_id).limit(1)) is not None:
                surviving.append(story_id)
                continue
            self.session.execute(
                update(Article).where(Article.matched_story_id == story_id).values(matched_story_id=None)
            )
            self.remove_story(story_id)
        return holding, surviving, count

    def held_articles(self, holding: int, limit: int) -> list[Article]:
        """The next articles waiting in a holding story, in publication order, without their ``raw_html``."""
        return list(
            self.session.scalars(
                select(Article)
                .options(defer(Article.raw_html))
                .where(Article.story_id == holding)
                .order_by(Article.published_at, Article.id)
                .limit(limit)
            )
        )

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

    def empty_stories(self, merges: Sequence[tuple[int, int, float]]) -> None:
        """Move each (absorbed, into, score) story's articles into the other, in the order given (a story
        absorbed after it took in another passes on all): the articles' part of a merge, which writes no
        story row, so it can run before the cluster lock (``merge_stories`` records the merge under it)."""
        if merges:
            articles = _table(Article)
            self.session.execute(
                articles.update()
                .where(articles.c.story_id == bindparam("absorbed"))
                .values(story_id=bindparam("into")),
                [{"absorbed": absorbed, "into": into} for absorbed, into, _ in merges],
            )

    def merge_stories(self, merges: Sequence[tuple[int, int, float]]) -> None:
        """Keep each emptied (absorbed, into, score) story's row as the record of its merge, out of the
        index."""
        if not merges:
            return
        stories = _table(Story)
        for chunk in _chunks([absorbed for absorbed, _, _ in merges]):
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
                change_seq=self._changing(),
            ),
            [{"absorbed": absorbed, "into": into, "score": score} for absorbed, into, score in merges],
        )

    def story_change_mark(self) -> int:
        """How many transactions have changed stories, as this one sees it: read first, it tells which
        stories changed after this transaction's reads (``stories_changed_since``)."""
        return int(self.get_meta(STORY_CHANGES) or 0)

    def stories_changed_since(
        self, mark: int, seen: Collection[int], terms: Collection[str], weeks: Collection[int]
    ) -> bool:
        """Whether, since ``mark``, a story in ``seen`` changed or went, or one indexed under these terms in
        these weeks changed or appeared: what a placement decided without the lock then no longer holds.
        Numbers are drawn under the cluster lock, so the stories a later transaction changed carry a number
        above any this one could see."""
        stories, terms_table = _table(Story), _table(StoryTerm)
        wanted = sorted(seen)
        present = self.session.scalar(select(func.count()).select_from(stories).where(stories.c.id.in_(wanted)))
        if present != len(wanted):
            return True
        # The stories changed since, through their index, whatever the planner guesses of the column.
        changed = list(self.session.scalars(select(stories.c.id).where(stories.c.change_seq > mark)))
        if set(changed) & set(wanted):
            return True
        for chunk in _chunks(changed):
            shares = select(terms_table.c.story_id).where(
                terms_table.c.story_id.in_(chunk),
                terms_table.c.term.in_(sorted(terms)),
                terms_table.c.week.in_(sorted(weeks)),
            )
            if self.session.execute(shares.limit(1)).first() is not None:
                return True
        return False

    def _changing(self) -> int:
        """This transaction's number among those that change stories (``story_change_mark``), drawn on its
        first change; under the cluster lock, so that numbers follow the order of commits."""
        if self._change_number is None:
            self._change_number = self.add_to_meta(STORY_CHANGES, 1)
        return self._change_number

    def story_of(self, article_id: int) -> int:
        return self.session.scalars(select(Article.story_id).where(Article.id == article_id)).one()

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
        if self._postgres():  # the lists as arrays, joined
            lists = {
                "terms": _joined(weights),
                "weights": _joined(weights.values()),
                "weeks": _joined(weeks),
                "have": _joined(sorted(have)),
            }
        else:  # as JSON
            lists = {
                "weights": json.dumps(dict(sorted(weights.items()))),
                "weeks": json.dumps(list(weeks)),
                "have": json.dumps(sorted(have)),
            }
        rows = self.session.execute(_stories_sharing(self._postgres()), {**lists, "limit": limit}).all()
        return [(row[1], float(row[0])) for row in rows], [Candidate(*row[1:]) for row in rows if row[1] not in have]

    def story_versions(self, story_ids: Sequence[int]) -> dict[int, datetime]:
        """When each of these stories last changed: a plan made from them applies only if none has since."""
        found: dict[int, datetime] = {}
        for chunk in _chunks(sorted(story_ids)):
            rows = self.session.execute(select(Story.id, Story.updated_at).where(Story.id.in_(chunk)))
            found.update((story_id, updated_at) for story_id, updated_at in rows)
        return found

    def stories_by_id(self, story_ids: Sequence[int]) -> list[Candidate]:
        """Live stories' summaries as candidates (merged and empty ones left out), in id order."""
        found: list[Candidate] = []
        for chunk in _chunks(sorted(story_ids)):
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

    def members_of(self, story_ids: Sequence[int]) -> dict[int, StoryMembers]:
        """These stories with their members as they are now, in publication order, the stored vectors of
        the original (not reprinted) ones and which reprint copies which: what summarising them again after
        articles moved needs, in one query for all."""
        story, article = _table(Story), _table(Article)
        found: dict[int, StoryMembers] = {}
        for chunk in _chunks(sorted(story_ids)):
            rows = self.session.execute(
                select(story.c.id, story.c.title, *_member_columns(), article.c.terms, article.c.duplicate_of_id)
                .select_from(story.outerjoin(article, article.c.story_id == story.c.id))
                .where(story.c.id.in_(chunk))
                .order_by(story.c.id, article.c.published_at, article.c.id)
            )
            for row in rows:
                held = found.setdefault(row[0], StoryMembers(row[1], [], {}, {}))
                if row[2] is not None:
                    held.members.append(Member(*row[2:8]))
                    if not row[7]:
                        held.vectors[row[2]] = dict(row[8] or {})
                    if row[9] is not None:
                        held.reprinted[row[2]] = row[9]
        return found

    def placed_members(self, story_ids: Sequence[int]) -> list[Placed]:
        """These stories' articles for regrouping, one per near-copy family (an original and its reprints,
        and theirs). The family is named by its original, whose story its reprints follow, and speaks with
        its first-published member (ties: the lowest URL): which member arrived first, and so became the
        original, is arrival order, and the reprints' cuts and notes make their vectors differ."""
        rows: list[Any] = []
        for chunk in _chunks(sorted(story_ids)):
            rows += self.session.execute(
                select(
                    Article.id,
                    Article.story_id,
                    Article.published_at,
                    Article.terms,
                    Article.event_date,
                    Article.url,
                    Article.duplicate_of_id,
                ).where(Article.story_id.in_(chunk))
            ).all()
        parent = {row.id: row.duplicate_of_id for row in rows}

        def root(article_id: int) -> int:
            while parent.get(article_id) is not None and parent[article_id] in parent:
                article_id = parent[article_id]
            return article_id

        by_id = {row.id: row for row in rows}
        voices: dict[int, Any] = {}
        for row in rows:
            family = root(row.id)
            voice = voices.get(family)
            if voice is None or (row.published_at, row.url) < (voice.published_at, voice.url):
                voices[family] = row
        return [
            Placed(
                family,
                by_id[family].story_id,
                voice.published_at,
                dict(voice.terms or {}),
                voice.event_date,
                voice.url,
                voice.id,
            )
            for family, voice in sorted(voices.items())
        ]

    def record_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Append to story_events: rows with kind, story_id, other_story_id, article_id, score and reason."""
        if events:
            now = utcnow()
            base = {"at": now, "other_story_id": None, "article_id": None, "score": None}
            self.session.execute(insert(StoryEvent), [{**base, **e} for e in events])

    def term_counts_of(self, article_ids: Sequence[int]) -> dict[int, dict[str, float]]:
        """The stored term counts of these articles (those stored before counts were kept have none)."""
        found: dict[int, dict[str, float]] = {}
        for chunk in _chunks(sorted(article_ids)):
            rows = self.session.execute(
                select(Article.id, Article.term_counts).where(Article.id.in_(chunk), Article.term_counts.is_not(None))
            )
            found.update((aid, dict(counts or {})) for aid, counts in rows)
        return found

    def move_articles(self, moves: Mapping[int, tuple[int, float | None]]) -> None:
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
            self._carry_reprints([article_id for article_id, _ in group], story_id)

    def _carry_reprints(self, originals: Sequence[int], story_id: int) -> None:
        """Reprints follow the article they reprint, and reprints of reprints follow them: a near-copy may
        have matched an earlier near-copy, so the chain is followed to its end."""
        frontier = list(originals)
        while frontier:
            following: list[int] = []
            for chunk in _chunks(frontier):
                following += self.session.scalars(select(Article.id).where(Article.duplicate_of_id.in_(chunk))).all()
            for chunk in _chunks(following):
                self.session.execute(update(Article).where(Article.id.in_(chunk)).values(story_id=story_id))
            frontier = following

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
                    "change_seq": self._changing(),
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
        for chunk in _chunks(story_ids, STORY_PAIRS_IN_LIST):
            members = set(chunk)
            pairs = sorted(pair for pair in kept if pair[0] in members)
            condition = tuple_(table.c.story_id, table.c.term).not_in(pairs) if pairs else true()
            self.session.execute(delete(table).where(table.c.story_id.in_(chunk), condition))

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


@lru_cache(maxsize=2)
def _story_state_query(with_centroid: bool) -> Select[Any]:
    """A story's title (and centroid) on every row of its members, or on one row of nulls if it has none."""
    story, article = _table(Story), _table(Article)
    return (
        select(story.c.title, story.c.centroid if with_centroid else null(), *_member_columns())
        .select_from(story.outerjoin(article, article.c.story_id == story.c.id))
        .where(story.c.id == bindparam("story_id"))
        .order_by(article.c.published_at, article.c.id)
    )


@lru_cache(maxsize=2)
def _stories_sharing(postgres: bool) -> TextualSelect:
    """Built once per dialect: the statement ``Repository.stories_sharing`` runs for every article placed,
    each list bound as one parameter whatever its length (PostgreSQL: arrays; SQLite: JSON, ``json_each``).
    An IN list and a CASE per term cost SQLAlchemy more to build and compile, on each call, than the
    database takes to answer."""
    if postgres:
        have = f"= ANY({_array('have', 'INTEGER')})"
        weighted = f"unnest({_array('terms', 'VARCHAR(64)')}, {_array('weights', 'FLOAT8')}) AS q(term, w)"
        weeks = f"= ANY({_array('weeks', 'SMALLINT')})"
    else:
        have = "IN (SELECT value FROM json_each(:have))"
        weighted = "(SELECT key AS term, value AS w FROM json_each(:weights)) AS q"
        weeks = "IN (SELECT value FROM json_each(:weeks))"
    columns = _candidate_columns()
    return sql_text(
        f"SELECT r.shared, s.id, CASE WHEN s.id {have} THEN NULL ELSE s.centroid END,"
        " s.first_published_at, s.last_published_at, s.event_date, s.original_count"
        " FROM (SELECT st.story_id, SUM(st.weight * q.w) AS shared FROM story_terms st"
        f" JOIN {weighted} ON st.term = q.term WHERE st.week {weeks}"
        " GROUP BY st.story_id ORDER BY shared DESC, st.story_id LIMIT :limit) AS r"
        " JOIN stories s ON s.id = r.story_id WHERE s.article_count > 0 ORDER BY r.shared DESC, s.id"
    ).columns(column("shared", Float), *(column(c.name, c.type) for c in columns))


def _member_columns() -> tuple[ColumnElement[Any], ...]:
    """An article as a story member (grouping.Member's fields)."""
    c = _table(Article).c
    return (c.id, c.published_at, c.source, c.title, c.event_date, c.duplicate_of_id.is_not(None))


def _candidate_columns() -> tuple[ColumnElement[Any], ...]:
    """A story as a placement candidate (stories.Candidate's fields), in Core columns: no ORM row loading."""
    c = _table(Story).c
    return (c.id, c.centroid, c.first_published_at, c.last_published_at, c.event_date, c.original_count)
