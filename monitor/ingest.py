"""The one path every article takes, fetched or imported: extract → near-copy → story → store.

``prepare`` is pure CPU (extraction, signatures, term counts) and touches no database, so it
can run off the event loop; ``store`` is one transaction that places and records the article.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from monitor import dedup, stories
from monitor.extraction import extract
from monitor.storage import Article, NewArticle, PlacementRecord, Repository, Storage
from monitor.urls import canonical_url, host_of


@dataclass(frozen=True)
class Incoming:
    """An article as it arrives: from a feed item plus its page, or from an import line."""

    url: str
    fetched_at: datetime
    title: str | None = None
    text: str | None = None
    html: str | None = None
    published_at: datetime | None = None
    source: str | None = None
    feed_id: int | None = None
    language: str | None = None


@dataclass(frozen=True)
class Prepared:
    article: NewArticle
    signature: dedup.Signature
    counts: Counter[str]


@dataclass(frozen=True)
class Outcome:
    article_id: int
    story_id: int
    method: str  # exact_url | near_copy | story_match | new_story
    created: bool
    score: float | None = None


class Ingestor:
    def __init__(self, storage: Storage, params: stories.StoryParams | None = None) -> None:
        self.storage = storage
        self.params = params or stories.StoryParams()
        self._fingerprint_checked = False
        self._lock = threading.Lock()  # one placement at a time in this process

    def prepare(self, incoming: Incoming) -> Prepared:
        """Extract (when given HTML) and compute everything placement needs; raises ExtractionError."""
        url = canonical_url(incoming.url)
        title, text, published = incoming.title, incoming.text, incoming.published_at
        author = site = None
        language = incoming.language
        if incoming.html is not None:
            page = extract(incoming.html, url)
            url = page.canonical_url or url
            text = page.text
            title = title or page.title
            published = published or page.published_at
            author, site, language = page.author, page.site_name, page.language or language
        text = (text or "").strip()
        title = (title or "").strip() or text.split("\n", 1)[0][:200]
        article = NewArticle(
            url=url,
            title=title,
            text=text,
            source=incoming.source or site or host_of(url),
            author=author,
            published_at=published or incoming.fetched_at,
            fetched_at=incoming.fetched_at,
            event_date=stories.event_date(title, text, published or incoming.fetched_at, self.params),
            language=language,
            feed_id=incoming.feed_id,
            raw_html=incoming.html,
            terms={},
            minhash=b"",
            shingle_count=0,
        )
        signature = dedup.signature(text)
        return Prepared(article, signature, stories.term_counts(title, text, self.params))

    def store(self, prepared: Prepared) -> Outcome:
        """Place the article (near-copy, story match or new story) and record it, in one transaction."""
        with self._lock, self.storage.repository() as repo:
            repo.lock_cluster("placement")  # two reports of one event, two workers: still one story
            existing = repo.article_id_by_url(prepared.article.url)
            if existing is not None:
                return Outcome(existing, repo.story_of(existing), "exact_url", created=False)
            self._check_fingerprint(repo)
            placement, vector, centroid = self._placement(repo, prepared)
            sig, article = prepared.signature, prepared.article
            row = repo.add_article(
                replace(article, terms=vector, minhash=sig.minhash, shingle_count=sig.shingle_count),
                placement,
                sig.band_keys,
                story_title=article.title,
            )
            self._account(repo, row.story_id, placement, vector, centroid, prepared.counts)
            return Outcome(row.id, row.story_id, placement.method, created=True, score=placement.score)

    def recluster(self, since: datetime | None = None, until: datetime | None = None) -> int:
        """Place again, in publication order and from their stored text, the articles published in
        [since, until), with the current parameters; nothing is fetched. Deterministic, so running it
        twice gives the same grouping. Articles after ``until`` keep their stories. Returns the count."""
        with self._lock, self.storage.repository() as repo:
            repo.lock_cluster("placement")
            self._check_fingerprint(repo)
            articles = repo.articles_between(since, until)
            prepared = [self._prepared_from(a) for a in articles]
            holding, surviving = repo.detach(articles, [p.counts for p in prepared])
            for story_id in surviving:  # what stays of a story is summarised again from its members
                summary: dict[str, float] = {}
                for member in repo.story_articles(story_id):
                    if member.duplicate_of_id is None:
                        summary = stories.add_to_centroid(summary, member.terms, self.params)
                repo.refresh_story(story_id, summary)
            for article, ready in zip(articles, prepared, strict=True):
                placement, vector, centroid = self._placement(repo, ready)
                repo.replace_placement(article, placement, vector, ready.signature.band_keys)
                self._account(repo, article.story_id, placement, vector, centroid, ready.counts)
            repo.remove_story(holding.id)
            return len(articles)

    def _prepared_from(self, article: Article) -> Prepared:
        new = NewArticle(
            url=article.url,
            title=article.title,
            text=article.text,
            source=article.source,
            author=article.author,
            published_at=article.published_at,
            fetched_at=article.fetched_at,
            event_date=stories.event_date(article.title, article.text, article.published_at, self.params),
            language=article.language,
            feed_id=article.feed_id,
            raw_html=None,
            terms={},
            minhash=b"",
            shingle_count=0,
        )
        article.event_date = new.event_date
        return Prepared(
            new, dedup.signature(article.text), stories.term_counts(article.title, article.text, self.params)
        )

    def _check_fingerprint(self, repo: Repository) -> None:
        if not self._fingerprint_checked:
            dedup.check_fingerprint(repo.get_meta("minhash_fingerprint"))
            repo.set_meta("minhash_fingerprint", dedup.FINGERPRINT)
            self._fingerprint_checked = True

    def _placement(
        self, repo: Repository, prepared: Prepared
    ) -> tuple[PlacementRecord, dict[str, float], Mapping[str, float] | None]:
        """Near-copy of an earlier article, else the best story active around its publication, else new.

        Also returns the chosen story's centroid as it stands ({} for a new story; None for a near-copy,
        whose story does not change)."""
        sig, article = prepared.signature, prepared.article
        candidates = [
            dedup.Stored(c.article_id, c.minhash, c.shingle_count) for c in repo.near_copy_candidates(sig.band_keys)
        ]
        near = dedup.best_near_copy(sig, candidates)
        df = repo.document_frequencies(prepared.counts)
        vector = stories.vectorize(prepared.counts, df, repo.document_count(), self.params)
        if near is not None:
            score = max(near.similarity, near.containment)
            story = repo.story_of(near.article_id)
            return PlacementRecord("near_copy", score, story, near.article_id, near.similarity), vector, None
        start, end = stories.window(article.published_at, self.params)
        options = [
            stories.Candidate(s.story_id, s.centroid, s.first_published_at, s.last_published_at, s.event_date)
            for s in repo.stories_active_between(start, end)
        ]
        match = stories.best_story(vector, article.published_at, options, self.params, article.event_date)
        if match is None:
            return PlacementRecord("new_story", None, None), vector, {}
        centroid = next(o.centroid for o in options if o.story_id == match.story_id)
        return PlacementRecord("story_match", match.score, match.story_id), vector, centroid

    def _account(
        self,
        repo: Repository,
        story_id: int,
        placement: PlacementRecord,
        vector: dict[str, float],
        centroid: Mapping[str, float] | None,
        counts: Counter[str],
    ) -> None:
        """The story's summary and centroid, and the corpus statistics, take the placed article in.

        A reprint (near-copy) adds no new evidence about the story: its centroid stays."""
        updated = None if centroid is None else stories.add_to_centroid(centroid, vector, self.params)
        repo.refresh_story(story_id, updated)
        repo.add_document_terms(counts)

    def ingest(self, incoming: Incoming) -> Outcome:
        return self.store(self.prepare(incoming))
