"""Placement: near-copy, story match or new story, and regrouping, decided without the cluster-wide lock and
written under it.

``Ingestor.store_many`` places and records a batch of prepared articles in one transaction: the batch is
placed one article after another exactly as if each were stored before the next (corpus statistics,
near-copy buckets and story summaries of the batch are kept in memory), but its reads and writes are
shared. The reads come first, without the lock; under it, the transaction asks whether anything they found
changed meanwhile (``_Placing.stale``) and decides again only then, so the lock is held for the writes.
After deciding twice, the next ``CONTENDED_BATCHES`` decide under the lock from the start: another worker
is placing in the same stories, and deciding first would be wasted again (two daemons on the scale-out
pages spent 51 % more CPU without this).
The corpus statistics are not checked: another worker's articles counted meanwhile would change the
weights by one document in the corpus, while the stories and buckets that decide where an article goes are."""

from __future__ import annotations

import gc
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from monitor import grouping
from monitor.grouping import nearcopy
from monitor.pipeline.prepare import Incoming, Prepared, prepare
from monitor.storage import Article, NewArticle, NewRow, PlacementRecord, Repository, Storage, StoryMembers


@dataclass(frozen=True)
class Outcome:
    article_id: int
    story_id: int
    method: str  # exact_url | near_copy | story_match | new_story
    created: bool
    score: float | None = None


log = logging.getLogger(__name__)

BATCH = 64  # articles placed per transaction, at most: placement's reads and writes are shared across them
REGROUP_NEIGHBOURS = 8  # indexed neighbours of each changed story grouped again with it, at most...
REGROUP_ARTICLES = 400  # ...while the neighbourhood holds fewer articles than this: bounded work per batch
REGROUP_CHUNK = 32  # stories the periodic pass groups again at a time
REGROUP_TRIES = 3  # plans of one regrouping, should other workers change its stories meanwhile
CONTENDED_BATCHES = 8  # after a batch decided twice, the next ones decide under the lock from the start


@contextmanager
def _collection_deferred() -> Iterator[None]:
    """No garbage collection in a transaction that takes the cluster lock: a full collection of a worker's
    heap pauses it for up to a tenth of a second (measured: 118 ms), which would hold the lock that long.
    It runs when the transaction is over."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Ingestor:
    def __init__(self, storage: Storage, params: grouping.StoryParams | None = None) -> None:
        self.storage = storage
        self.params = params or grouping.StoryParams()
        self._fingerprint_checked = False
        self._lock = threading.Lock()  # one placement at a time in this process
        self._contended = 0  # batches left to decide under the lock: another worker was placing beside this one
        self._unsettled: set[int] = set()  # stories placed into and not yet grouped again (``settle``)
        self._unsettled_lock = threading.Lock()

    def prepare(self, incoming: Incoming) -> Prepared:
        return prepare(incoming, self.params)

    def store(self, prepared: Prepared) -> Outcome:
        return self.store_many([prepared])[0]

    def store_many(
        self,
        batch: Sequence[Prepared],
        then: Callable[[Repository, list[Outcome]], None] | None = None,
        *,
        regroup: bool = True,
    ) -> list[Outcome]:
        """Place (near-copy, story match or new story) and record the articles, in order, in one transaction;
        ``then`` records in the same transaction what follows from it (the feed items it settles). Then the
        stories it touched are grouped again, or, with ``regroup=False``, left for ``settle``: a worker
        placing a burst groups again once the burst is in, not after every batch of it."""
        if not batch:
            return []
        with self._lock, _collection_deferred(), self.storage.repository() as repo:
            # Decided without the lock, so that other workers go on; unless another worker is placing beside
            # this one, when deciding first would likely be wasted.
            placing = None if self._contended else _Placing.decide(repo, self.params, batch)
            repo.lock_cluster("placement")  # two reports of one event, two workers: still one story
            self._check_fingerprint(repo)
            if placing is None:
                self._contended -= 1
                placing = _Placing.decide(repo, self.params, batch)
            elif placing.stale(repo):
                for story_id in sorted(placing.placer.founded):
                    repo.remove_story(story_id)
                log.debug("placement of %d articles decided again under the lock: what it read changed", len(batch))
                self._contended = CONTENDED_BATCHES
                placing = _Placing.decide(repo, self.params, batch)
            placing.write(repo)
            if then is not None:
                then(repo, placing.outcomes)
            touched = sorted(placing.placer.touched)
            outcomes = placing.outcomes
        if regroup:
            self.regroup(touched)
        else:
            with self._unsettled_lock:
                self._unsettled.update(touched)
        return outcomes

    def settle(self) -> list[Merge]:
        """Group again the stories placed into since the last call (``store_many(regroup=False)``),
        ``REGROUP_CHUNK`` at a time. Those whose regrouping other workers kept changing wait for the next
        call. Returns the merges."""
        with self._unsettled_lock:
            stories, self._unsettled = sorted(self._unsettled), set()
        merges: list[Merge] = []
        for start in range(0, len(stories), REGROUP_CHUNK):
            chunk = stories[start : start + REGROUP_CHUNK]
            done = self._regroup(chunk)
            if done is None:
                with self._unsettled_lock:
                    self._unsettled.update(chunk)
            else:
                merges += done
        return merges

    @property
    def unsettled(self) -> int:
        return len(self._unsettled)

    def recluster(self, since: datetime | None = None, until: datetime | None = None) -> int:
        """Place again, in publication order and from their stored text, the articles published in
        [since, until), with the current parameters; nothing is fetched. Deterministic, so running it
        twice gives the same grouping. Articles after ``until`` keep their stories. Returns the count.

        Streamed: the articles are first taken out of their stories (one transaction, no text read), then
        placed ``BATCH`` at a time, each batch a transaction of its own under the placement lock, so workers
        go on placing meanwhile and memory does not grow with the corpus. Interrupted, it is run again."""
        with self._lock, _collection_deferred(), self.storage.repository() as repo:
            repo.lock_cluster("placement")
            self._check_fingerprint(repo)
            holding, surviving, count = repo.detach_between(since, until, self._terms_of)
            placer = _Placer(repo, self.params, [])
            placer.resummarise(surviving)  # what stays of a story is summarised again from its members
            placer.flush()
        while True:
            with self._lock, _collection_deferred(), self.storage.repository() as repo:
                repo.lock_cluster("placement")
                articles = repo.held_articles(holding, BATCH)
                if not articles:
                    repo.remove_story(holding)
                    break
                prepared = [self._prepared_from(a) for a in articles]
                placer = _Placer(repo, self.params, prepared)
                for article, ready in zip(articles, prepared, strict=True):
                    placement, vector = placer.decide(ready)
                    story_id = placement.story_id or repo.insert_story(article.title, article.published_at)
                    repo.update_placement(article.id, placement, story_id, vector, ready.counts)
                    placer.record(article.id, story_id, ready, placement, vector)
                placer.flush()
                touched = sorted(placer.touched)
            self.regroup(touched)
        self.merge_young_stories()  # as after an import, so both group alike
        return count

    def regroup(self, stories: Sequence[int]) -> list[Merge]:
        """Group these stories and their neighbourhood again as a batch would, and apply it; if other
        workers kept changing them, the next batch there, or the periodic pass, does it."""
        done = self._regroup(stories)
        if done is None:
            log.info("regrouping %d stories left to the next pass: other workers kept changing them", len(stories))
        return done or []

    def _regroup(self, stories: Sequence[int]) -> list[Merge] | None:
        """Planned without the placement lock, and applied under it a part at a time (``grouping.parts``:
        articles moving between the same stories), each part in a few milliseconds if its stories did not
        change meanwhile (another worker placed there). Planned again while a part could not be applied,
        ``REGROUP_TRIES`` times at most (None: not all applied). Returns the merges."""
        merges: list[Merge] = []
        for _ in range(REGROUP_TRIES):
            with self.storage.repository() as repo:
                plan = _Placer(repo, self.params, []).plan_regroup(stories)
            if plan is None:
                return merges
            stale = False
            for touched, change in grouping.parts(plan.change, plan.origin):
                versions = {s: at for s, at in plan.versions.items() if s in touched}
                try:
                    with self._lock, _collection_deferred(), self.storage.repository() as repo:
                        applier = _Placer(repo, self.params, [])
                        moved = applier.move_regrouped(replace(plan, change=change), touched)
                        repo.lock_cluster("placement")
                        if repo.story_versions(sorted(versions)) != versions:
                            raise _Stale  # rolls the moves back
                        merges += applier.record_regrouped(moved)
                        applier.flush()
                except _Stale:
                    stale = True
            if not stale:
                return merges
        return None

    def _terms_of(self, title: str, text: str) -> Iterable[str]:
        return grouping.term_counts(title, text, self.params).keys()

    def merge_young_stories(self, due: Callable[[datetime | None, datetime], bool] | None = None) -> list[Merge] | None:
        """The periodic pass, a safety net: every batch already groups again what it touched, and this
        groups again the stories changed since the last pass, with their neighbours, ``REGROUP_CHUNK`` at a
        time, each chunk in a transaction of its own so that placement is never held up for long. Runs if
        ``due(last pass or None, now)``, asked under the placement lock so that workers firing the same
        schedule run it once (None: runs). Returns the merges, or None if the pass was not due."""
        now = datetime.now(UTC)
        with self._lock, _collection_deferred(), self.storage.repository() as repo:
            repo.lock_cluster("placement")
            stored = repo.get_meta("merged_at")
            last = datetime.fromisoformat(stored) if stored else None
            if due is not None and not due(last, now):
                return None
            repo.set_meta("merged_at", now.isoformat())
        with self.storage.repository() as repo:  # a scan of the stories: not under the lock
            # The first pass on a database looks back one story span, not at every story ever made.
            young = repo.stories_updated_since(last or now - timedelta(days=self.params.max_span_days))
        merges: list[Merge] = []
        for start in range(0, len(young), REGROUP_CHUNK):
            merges += self.regroup(young[start : start + REGROUP_CHUNK])
        return merges

    def _prepared_from(self, article: Article) -> Prepared:
        signature = nearcopy.signature(article.text)
        new = NewArticle(
            url=article.url,
            title=article.title,
            text=article.text,
            source=article.source,
            author=article.author,
            published_at=article.published_at,
            fetched_at=article.fetched_at,
            event_date=grouping.event_date(article.title, article.text, article.published_at, self.params),
            language=article.language,
            feed_id=article.feed_id,
            raw_html=None,
            minhash=signature.minhash,
            shingle_count=signature.shingle_count,
        )
        article.event_date = new.event_date  # the rule that reads it may have been tuned too
        return Prepared(new, signature, grouping.term_counts(article.title, article.text, self.params), article.url)

    def _check_fingerprint(self, repo: Repository) -> None:
        if not self._fingerprint_checked:
            nearcopy.check_fingerprint(repo.get_meta("minhash_fingerprint"))
            repo.set_meta("minhash_fingerprint", nearcopy.FINGERPRINT)
            self._fingerprint_checked = True

    def ingest(self, incoming: Incoming) -> Outcome:
        return self.store(self.prepare(incoming))


@dataclass
class _Placing:
    """A batch placed without the cluster lock (what ``store_many`` writes once it holds it), and what the
    decisions read: the URLs and near-copy buckets found, and the stories read (``_Placer``)."""

    mark: int  # the story changes it had seen when it started (``Repository.story_change_mark``)
    placer: _Placer
    outcomes: list[Outcome]
    rows: dict[int, NewRow]  # the batch's new articles, by id
    asked: set[str]  # the batch's URLs, canonical links included...
    urls: dict[str, int]  # ...and those found stored

    @classmethod
    def decide(cls, repo: Repository, params: grouping.StoryParams, batch: Sequence[Prepared]) -> _Placing:
        """Each article placed in order, seeing the ones before it. New stories are inserted (unseen by
        others until commit) and article ids drawn; nothing else is written."""
        mark = repo.story_change_mark()  # first: what changes after it, these reads may not have seen
        urls = {p.article.url for p in batch} | {p.own_url for p in batch}
        known = repo.article_ids_by_url(urls)
        placing = cls(mark, _Placer(repo, params, batch), [], {}, urls, dict(known))
        ids = iter(repo.new_article_ids(len(urls)))
        rows = placing.rows
        for prepared in batch:
            url = prepared.article.url
            if url != prepared.own_url:
                note = _unconfirmed(repo, url, known, prepared, rows)
                if note:
                    prepared = replace(
                        prepared, article=replace(prepared.article, url=prepared.own_url, canonical_note=note)
                    )
                    url = prepared.own_url
            if url in known:
                article_id = known[url]
                story_id = rows[article_id].story_id if article_id in rows else repo.story_of(article_id)
                placing.outcomes.append(Outcome(article_id, story_id, "exact_url", created=False))
                continue
            placement, vector = placing.placer.decide(prepared)
            story_id = placement.story_id or repo.insert_story(prepared.article.title, prepared.article.published_at)
            article_id = next(ids)
            rows[article_id] = NewRow(article_id, prepared.article, placement, story_id, vector, prepared.counts)
            placing.placer.record(article_id, story_id, prepared, placement, vector)
            known[url] = article_id
            placing.outcomes.append(
                Outcome(article_id, story_id, placement.method, created=True, score=placement.score)
            )
        return placing

    def stale(self, repo: Repository) -> bool:
        """Whether what the decisions read changed since they started: a URL or near-copy bucket filled, or a
        story read, or sharing the terms looked up, changed. Asked under the lock, so it can change no more."""
        placer = self.placer
        if repo.article_ids_by_url(self.asked) != self.urls or placer.bucket_rows(repo) != placer.near:
            return True
        seen = placer.read.keys() | (placer.touched.keys() - placer.founded) | {s for _, _, s in placer.near}
        return repo.stories_changed_since(self.mark, seen, placer.asked_terms, placer.asked_weeks)

    def write(self, repo: Repository) -> None:
        repo.add_articles(list(self.rows.values()))
        self.placer.flush()


def _unconfirmed(
    repo: Repository, canonical: str, known: Mapping[str, int], prepared: Prepared, rows: Mapping[int, NewRow]
) -> str | None:
    """Why the canonical link ``prepared`` declares is not confirmed as its identity, or None if it is.

    A canonical link on another path is evidence, not an order: it is taken when it names a stored article
    whose text agrees (a near-copy). One naming nothing stored yet is not taken, or the first page to claim
    a URL would keep the real article from it; the two are then near-copies in one story. Only a link that
    differs in its query string alone is taken on its word."""
    if canonical not in known:
        if urlsplit(canonical).path == urlsplit(prepared.own_url).path:
            return None
        return f"canonical link {canonical} names no stored article yet"
    article_id = known[canonical]
    if article_id in rows:
        new = rows[article_id].new
        stored = nearcopy.Stored(article_id, new.minhash, new.shingle_count)
    else:
        stored = nearcopy.Stored(*repo.signature_of(article_id))
    if nearcopy.best_near_copy(prepared.signature, [stored]) is None:
        return f"canonical link {canonical} names a stored article whose text differs"
    return None


def _moved(
    before: Mapping[int, StoryMembers],
    moves: Mapping[int, tuple[int, float | None]],
    merges: Sequence[tuple[int, int, float]],
    changed: Iterable[int],
) -> dict[int, StoryMembers]:
    """The ``changed`` stories' members once ``moves`` and ``merges`` are applied to ``before`` (as
    ``Repository.move_articles`` and ``empty_stories`` do: reprints follow the article they copy, and a
    story absorbed passes on all it holds), in publication order."""
    where = {article: target for article, (target, _) in moves.items()}
    reprinted = {child: parent for held in before.values() for child, parent in held.reprinted.items()}
    carried = True
    while carried:
        carried = False
        for child, parent in reprinted.items():
            if parent in where and where.get(child) != where[parent]:
                where[child], carried = where[parent], True
    home = {m.article_id: story for story, held in before.items() for m in held.members}
    for absorbed, into, _ in merges:
        for article, story in home.items():
            if where.get(article, story) == absorbed:
                where[article] = into
    after = {story: StoryMembers(before[story].title if story in before else "", [], {}, {}) for story in changed}
    for story, held in before.items():
        for member in held.members:
            target = after.get(where.get(member.article_id, story))
            if target is not None:
                target.members.append(member)
                if member.article_id in held.vectors:
                    target.vectors[member.article_id] = held.vectors[member.article_id]
    for held in after.values():
        held.members.sort(key=lambda m: (m.published_at, m.article_id))
    return after


@dataclass(frozen=True)
class _Regrouping:
    """A regrouping planned without the lock: the versions of the stories it read (applied only if they are
    unchanged), where each moved article was and when it was published, and what changes."""

    versions: dict[int, datetime]
    origin: dict[int, int]
    published: dict[int, datetime]
    change: grouping.Change


@dataclass(frozen=True)
class _Moved:
    """A regrouping's articles moved and its stories summarised (``_Placer.move_regrouped``), the rest still
    to record: the stories created for its splits (by the plan's negative number), the moves and merges."""

    plan: _Regrouping
    created: dict[int, int]
    moves: dict[int, tuple[int, float | None]]
    merges: list[tuple[int, int, float]]


class _Stale(Exception):
    """A regrouping's stories changed between its plan and the lock: what it moved is rolled back."""


@dataclass(frozen=True)
class Merge:
    absorbed: int
    into: int
    score: float


class _Placer:
    """Places a batch one article at a time, each seeing the ones before it: what the batch changes
    (document frequencies, LSH buckets, touched stories) is held here and written back by ``flush``."""

    def __init__(self, repo: Repository, params: grouping.StoryParams, batch: Sequence[Prepared]) -> None:
        self.repo, self.params = repo, params
        self.documents = repo.document_count()
        self.df: Counter[str] = Counter(repo.document_frequencies(t for p in batch for t in p.counts))
        self.df_added: Counter[str] = Counter()
        self.placed = 0
        self.band_keys = sorted({k for p in batch for k in p.signature.band_keys})
        self.buckets: dict[int, list[tuple[nearcopy.Stored, int]]] = {}
        self.near: list[tuple[int, int, int]] = []  # (band key, article, story) as read
        for c in repo.near_copy_candidates(self.band_keys):
            self.buckets.setdefault(c.band_key, []).append(
                (nearcopy.Stored(c.article_id, c.minhash, c.shingle_count), c.story_id)
            )
            self.near.append((c.band_key, c.article_id, c.story_id))
        self.asked_terms: set[str] = set()  # the terms and weeks its story lookups asked for
        self.asked_weeks: set[int] = set()
        self.bands: list[tuple[int, int]] = []
        self.touched: dict[int, grouping.StoryState] = {}
        self.read: dict[int, grouping.Candidate] = {}  # stories as read from the database, untouched by the batch
        self.founded: set[int] = set()  # stories this batch created: not in the database's index yet

    def bucket_rows(self, repo: Repository) -> list[tuple[int, int, int]]:
        """The batch's near-copy buckets as they are now, in the form of ``near``."""
        return [(c.band_key, c.article_id, c.story_id) for c in repo.near_copy_candidates(self.band_keys)]

    def decide(self, prepared: Prepared) -> tuple[PlacementRecord, dict[str, float]]:
        """Near-copy of an earlier article, else the best story active around its publication, else new."""
        sig, article = prepared.signature, prepared.article
        sharing = {
            stored.article_id: (stored, story) for key in sig.band_keys for stored, story in self.buckets.get(key, ())
        }
        vector = grouping.vectorize(prepared.counts, self.df, self.documents, self.params)
        near = nearcopy.best_near_copy(sig, [stored for stored, _ in sharing.values()])
        if near is not None:
            score = max(near.similarity, near.containment)
            story = sharing[near.article_id][1]
            return PlacementRecord("near_copy", score, story, near.article_id, near.similarity), vector
        match = grouping.best_story(
            vector,
            article.published_at,
            self._candidates(vector, article.published_at),
            self.params,
            article.event_date,
        )
        if match is None:
            return PlacementRecord("new_story", None, None), vector
        return PlacementRecord("story_match", match.score, match.story_id), vector

    def _candidates(self, vector: Mapping[str, float], published_at: datetime) -> list[grouping.Candidate]:
        """``_ranked``, in story id order: ties in ``best_story`` go to the older story."""
        return sorted(self._ranked(vector, published_at), key=lambda c: c.story_id)

    def _ranked(
        self, vector: Mapping[str, float], first: datetime, last: datetime | None = None
    ) -> list[grouping.Candidate]:
        """The stories sharing the most weight with the article (or story) published from ``first`` to
        ``last`` in the story_terms index, among those that started in the weeks that matter. The index as
        this batch has changed it: a story the batch touched is looked up by its terms held here, not by
        its rows in the database."""
        weeks = grouping.candidate_weeks(first, last or first, self.params)
        terms = grouping.query_terms(vector, self.params)
        self.asked_terms.update(terms)
        self.asked_weeks.update(weeks)
        # The database ranks what it holds; the touched stories it ranks on stale terms are dropped, and
        # asking for as many more keeps the ranking of the others exact.
        ranked, read = self.repo.stories_sharing(
            {term: vector[term] for term in terms},
            weeks,
            self.params.candidates + len(self.touched.keys() - self.founded),
            have=self.read.keys(),
        )
        self.read.update((c.story_id, c) for c in read)
        found = {sid: self.read[sid] for sid, _ in ranked if sid not in self.touched}
        shared = {sid: score for sid, score in ranked if sid not in self.touched}
        wanted, week_set = set(terms), set(weeks)
        for story_id, state in self.touched.items():
            if state.members and grouping.week_of(state.first_published_at) in week_set:
                for term, weight in state.index_terms(self.params):
                    if term in wanted:
                        shared[story_id] = shared.get(story_id, 0.0) + weight * vector[term]
        best = sorted(shared, key=lambda sid: (-shared[sid], sid))[: self.params.candidates]
        return [self.touched[sid].candidate() if sid in self.touched else found[sid] for sid in best]

    def record(
        self, article_id: int, story_id: int, prepared: Prepared, placement: PlacementRecord, vector: dict[str, float]
    ) -> None:
        """The placed article now counts: in the corpus statistics, the LSH buckets and its story."""
        article = prepared.article
        self.documents += 1
        self.placed += 1
        self.df.update(prepared.counts.keys())
        self.df_added.update(prepared.counts.keys())
        stored = nearcopy.Stored(article_id, prepared.signature.minhash, prepared.signature.shingle_count)
        for key in sorted(set(prepared.signature.band_keys)):
            self.buckets.setdefault(key, []).append((stored, story_id))
            self.bands.append((key, article_id))
        if placement.story_id is None:
            self.founded.add(story_id)
        state = self._state(story_id, joining=article_id)
        member = grouping.Member(
            article_id,
            article.published_at,
            article.source,
            article.title,
            article.event_date,
            duplicate=placement.method == "near_copy",
        )
        state.add(member, None if member.duplicate else vector, self.params)

    def plan_regroup(self, stories: Sequence[int]) -> _Regrouping | None:
        """Group these stories and their closest indexed neighbours again from their articles, as a batch
        would (``grouping.regroup``): what would change, and the versions of the stories it read (None:
        nothing would). Reads only, so it runs without the placement lock."""
        hood: dict[int, grouping.Candidate] = {}
        articles = 0
        for mine in self.repo.stories_by_id(stories):
            if mine.story_id not in hood:
                hood[mine.story_id] = mine
                articles += mine.originals
            ranked = self._ranked(mine.centroid, mine.first_published_at, mine.last_published_at)
            for other in ranked[:REGROUP_NEIGHBOURS]:
                if articles >= REGROUP_ARTICLES:
                    break
                if other.story_id not in hood:
                    hood[other.story_id] = other
                    articles += other.originals
        versions = self.repo.story_versions(sorted(hood))
        members = self._reweighed(self.repo.placed_members(sorted(hood)))
        change = grouping.regroup(members, self.params)
        if not change.moves:
            return None
        moved = [a for a in members if a.article_id in change.moves]
        return _Regrouping(
            versions, {a.article_id: a.story_id for a in moved}, {a.article_id: a.published_at for a in moved}, change
        )

    def move_regrouped(self, plan: _Regrouping, touched: Iterable[int]) -> _Moved:
        """The articles' part of a regrouping, before the cluster lock: the stories it touches read as they
        are, the stories it splits off created, and articles moved (reprints with them) and emptied. Only
        article rows change, which no holder of the lock writes, so no holder waits for these; the
        transaction rolls them back if the stories changed meanwhile (``_regroup`` checks their versions).
        The changed stories are summarised again here too, from their members as read before the moves,
        moved in memory."""
        change = plan.change
        before = self.repo.members_of([story for story in touched if story > 0])  # new stories: negative
        created: dict[int, int] = {}
        for fresh in sorted(change.split, reverse=True):  # titled from its members when summarised
            first = min(plan.published[aid] for aid, (target, _) in change.moves.items() if target == fresh)
            created[fresh] = self.repo.insert_story("", first)
        moves = {aid: (created.get(target, target), score) for aid, (target, score) in change.moves.items()}
        merges = [(story, created.get(into, into), score) for story, (into, score) in sorted(change.absorbed.items())]
        self.repo.move_articles(moves)
        self.repo.empty_stories(merges)
        gone = {story for story, _, _ in merges}
        changed = ({target for target, _ in moves.values()} | {plan.origin[aid] for aid in moves}) - gone
        self._summarise(_moved(before, moves, merges, changed))
        return _Moved(plan, created, moves, merges)

    def record_regrouped(self, moved: _Moved) -> list[Merge]:
        """The stories' part, under the lock: stories left empty kept as merged into the one that took most
        of them, and every change recorded in story_events (``flush`` writes the summaries). Returns the
        merges."""
        origin, moves, merges, created = moved.plan.origin, moved.moves, moved.merges, moved.created
        self.repo.merge_stories(merges)
        self.repo.record_events(
            [
                {
                    "kind": "split",
                    "story_id": created[fresh],
                    "other_story_id": source,
                    "reason": "its articles fit together better than in the story they were placed in",
                }
                for fresh, source in sorted(moved.plan.change.split.items(), reverse=True)
            ]
            + [
                {
                    "kind": "moved",
                    "story_id": target,
                    "other_story_id": origin[aid],
                    "article_id": aid,
                    "score": score,
                    "reason": "regrouped: it scores higher here than where it was placed",
                }
                for aid, (target, score) in sorted(moves.items())
            ]
            + [
                {
                    "kind": "merged",
                    "story_id": story,
                    "other_story_id": into,
                    "score": score,
                    "reason": "all its articles went to the story that took most of them",
                }
                for story, into, score in merges
            ]
        )
        return [Merge(story, into, score) for story, into, score in merges]

    def _reweighed(self, members: list[grouping.Placed]) -> list[grouping.Placed]:
        """The articles with their vectors weighed from their counts with today's document frequencies: an
        article's stored vector was weighed with those of the corpus it arrived in, which is arrival order."""
        voices = {a.article_id: a.voice_id or a.article_id for a in members}
        counts = self.repo.term_counts_of(list(voices.values()))
        df = self.repo.document_frequencies(t for terms in counts.values() for t in terms)
        documents = self.repo.document_count()
        return [
            replace(a, vector=grouping.vectorize(counts[voices[a.article_id]], df, documents, self.params))
            if voices[a.article_id] in counts
            else a
            for a in members
        ]

    def resummarise(self, story_ids: Iterable[int]) -> None:
        """Summarise these stories again from their members as they are now, after articles moved."""
        self._summarise(self.repo.members_of(sorted(story_ids)))

    def _summarise(self, stories: Mapping[int, StoryMembers]) -> None:
        """The centroid from the stored vectors of the original articles, in publication order."""
        for story_id, held in stories.items():
            state = grouping.StoryState(story_id, held.title, {}, held.members)
            for member in held.members:
                if not member.duplicate:
                    state.centroid = grouping.add_to_centroid(
                        state.centroid, held.vectors[member.article_id], self.params
                    )
            self.touched[story_id] = state

    def _state(self, story_id: int, joining: int | None = None) -> grouping.StoryState:
        """The story as this batch has it, loaded on first use. Loaded after ``joining`` (an article being
        recorded) was written, it would list it already: left out, so that it joins once."""
        if story_id not in self.touched:
            known = self.read.get(story_id)
            state = self.repo.story_state(story_id, known.centroid if known else None)
            state.members = [m for m in state.members if m.article_id != joining]
            self.touched[story_id] = state
        return self.touched[story_id]

    def flush(self) -> None:
        self.repo.add_bands(self.bands)
        if self.placed:
            self.repo.add_document_terms(self.df_added, self.placed)
        self.repo.save_stories([self.touched[sid] for sid in sorted(self.touched)], self.params)
