"""Placement of one new article against a PostgreSQL corpus of 10k, 100k and 1M articles: latency and memory.

    .venv/bin/python benchmarks/placement_scale.py [--sizes 10000,100000,1000000] [--placements 400]
        [--keep | --database URL] [--pass-beside] [--postgres postgresql://postgres@127.0.0.1:5432/test]

One throwaway database grows from one size to the next (``--keep`` keeps it and prints its URL; ``--database``
measures a kept one again, without loading, e.g. before and after a change of the code). The corpus is
bulk-loaded (COPY), not placed through the pipeline (a million placements would take hours), with what
placement reads made statistically realistic:

* articles spread over the 12 months of 2024, grouped into stories (60 % singletons, the rest 2-15 articles
  within a few days, about 1 in 5 of their later articles a reprint of an earlier one), every article cut from
  one of the 205 real French texts (rpm2-dev and the seeds, read from tests/data) with words dropped;
* MinHash signatures derived from the real text's signature (monitor.grouping.nearcopy.signature): an
  original article has 90-100 % of its 128 values replaced by random ones (a lower share would make thousands
  of unrelated articles share LSH buckets with their template: 205 texts stand for a million), a reprint
  5-35 % of its parent's; the band keys are computed by monitor.grouping.nearcopy._band_key, 32 article_bands
  rows per article. Each real text also has one reprint cluster (its own signature, 0-10 % replaced), loaded
  once: new articles close to a real text find it as a near-copy at every size, through buckets of realistic
  size;
* story centroids: 40-80 % of the terms of the text's real TF-IDF vector (monitor.grouping.features.vectorize), weights
  jittered, sometimes terms of a second text, and 2-7 named-entity-like terms from a Zipf vocabulary; the
  story_terms rows are the centroid's top StoryParams().index_terms terms, week = grouping.week_of(first);
* term_stats: the document frequencies of the 205 real texts scaled to the corpus (jittered), plus the entity
  terms; meta document_count = corpus size, minhash_fingerprint = nearcopy.FINGERPRINT.
The articles' secondary indexes (and those of article_bands, story_terms, stories) are dropped during a load and
rebuilt after it; then VACUUM (ANALYZE) and CHECKPOINT. Stored text is a few hundred characters: placement never
reads it; members of a story share their story's term vector (placement never reads articles.terms either).

At each size a FRESH SUBPROCESS builds an Ingestor and places --placements new articles (plus 20 warm-up ones) one
per transaction with ``Ingestor.store_many(regroup=False)`` (``prepare`` is not timed), and after every BURST of
them groups again what they touched (``Ingestor.settle``), as a worker does when its queue runs dry. The articles:
real text rewritten (25 % light edits of a real text: near-copies; 40 % heavy rewrites published within days of a
random existing article of the same text: story matches; 35 % heavy rewrites mixed with another text at a random
moment). It reports p50/p95/p99/max, the placement methods, the time per statement and for COMMIT (SQLAlchemy
events; "rest" is Python and driver),
EXPLAIN (ANALYZE, BUFFERS) of the slowest lookups, and its RSS after the warm-up and after the placements. Then
it times the periodic regrouping pass (``Ingestor.merge_young_stories``, a chunk of stories per transaction) over
the stories the placements changed, and its RSS after it. For placements and pass alike it reports how long each
transaction held the cluster-wide placement lock (from the grant to the end of COMMIT), and which statements
ran while it was held. With ``--pass-beside``, another process runs the pass over and over while the
placements are timed, as a second worker would: what placement costs while regrouping runs. The corpus
stands 205 real texts for every story, so many stories are near-identical by construction: the pass merges far
more here than in real coverage, and its time is an upper bound.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from benchmarks.common import article_count, database, machine, psycopg_url  # noqa: E402
from benchmarks.corpus import RPM2, SEEDS  # noqa: E402
from monitor import grouping  # noqa: E402
from monitor.grouping import nearcopy  # noqa: E402
from monitor.pipeline.placement import Ingestor  # noqa: E402
from monitor.pipeline.prepare import Incoming  # noqa: E402
from monitor.storage import Storage  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_S = 366 * 86400  # the corpus covers 2024
OUTLETS = [f"presse-{k:03d}" for k in range(1, 151)]
OUTLET_CUM = list(accumulate(1 / k**0.8 for k in range(1, 151)))
ENTITIES = 60_000  # named-entity-like terms, drawn Zipf: a few in many stories, most in a few
REPRINT_SHARE = 0.2  # of a story's later articles
RUBRICS = ["Analyse", "Décryptage", "Le point", "En bref", "Éclairage", "Zoom", "Les faits"]
CHUNK = 20_000  # articles generated, then copied, at a time
WARMUP = 20
BURST = 20  # placements a worker makes before its queue runs dry and it groups again (Ingestor.settle)
PARAMS = grouping.StoryParams()
# Indexes dropped during a load and rebuilt after it (the primary keys of articles and stories stay).
REBUILT_TABLES = ("articles", "article_bands", "story_terms", "stories")
KEPT = ("articles_pkey", "stories_pkey")
_SENTENCE = re.compile(r"(?<=[.!?»])\s+")
_TEMPLATE_URL = re.compile(r"/t(\d{3})-\d+\.html$")


# --- the real texts ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One real article: what every synthetic article is cut from."""

    title: str
    text: str
    words: list[str]
    sentences: list[str]
    signature: np.ndarray  # 128 uint64
    shingles: int
    vector: list[tuple[str, float]]  # its TF-IDF vector among the real texts, heaviest first
    terms: frozenset[str]


def load_templates() -> list[Template]:
    raw: list[tuple[str, str]] = []
    for line in RPM2.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            raw.append((row["title"], row["text"]))
    for path in sorted(SEEDS.glob("00*.txt")):
        text = path.read_text(encoding="utf-8").strip()
        first = re.sub(r"^date \d{4}-\d{2}\s+", "", text.splitlines()[0].strip())
        raw.append((first if len(first) <= 120 else " ".join(first.split()[:14]), text))
    counts = [grouping.term_counts(title, text, PARAMS) for title, text in raw]
    df = Counter(term for c in counts for term in c)
    templates = []
    for (title, text), c in zip(raw, counts, strict=True):
        sig = nearcopy.signature(text)
        vector = grouping.vectorize(c, df, len(raw), PARAMS)
        templates.append(
            Template(
                title=title,
                text=text,
                words=text.split(),
                sentences=[s for s in _SENTENCE.split(text.replace("\n", " ")) if s.strip()],
                signature=np.frombuffer(sig.minhash, dtype="<u8").copy(),
                shingles=sig.shingle_count,
                vector=sorted(vector.items(), key=lambda kv: (-kv[1], kv[0])),
                terms=frozenset(c),
            )
        )
    return templates


# --- bulk loading ----------------------------------------------------------------------------------------------


def _esc(value: str) -> str:
    """A value for COPY's text format."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _opt(value: object) -> str:
    return "\\N" if value is None else str(value)


_BAND_ROW = np.dtype([("n", ">i2"), ("l1", ">i4"), ("key", ">i8"), ("l2", ">i4"), ("id", ">i4")])
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)


def _bands_copy_data(keys: list[int], ids: list[int]) -> bytes:
    """article_bands rows in COPY's binary format, built with numpy (tens of millions of rows at 1M)."""
    rows = np.empty(len(keys), dtype=_BAND_ROW)
    rows["n"], rows["l1"], rows["l2"] = 2, 8, 4
    rows["key"] = np.array(keys, dtype=np.int64)
    rows["id"] = np.array(ids, dtype=np.int32)
    return _COPY_HEADER + rows.tobytes() + struct.pack(">h", -1)


@dataclass
class Chunk:
    articles: list[str] = field(default_factory=list)
    stories: list[str] = field(default_factory=list)
    story_terms: list[str] = field(default_factory=list)
    band_keys: list[int] = field(default_factory=list)
    band_ids: list[int] = field(default_factory=list)


@dataclass
class LoadReport:
    size: int
    added: int
    stories: int
    generate_s: float
    copy_s: float
    index_s: float
    vacuum_s: float
    sizes: dict[str, int]


class Corpus:
    """Grows the synthetic corpus in the database, one size after another."""

    def __init__(self, dsn: str, templates: list[Template], seed: int) -> None:
        self.dsn, self.templates = dsn, templates
        self.rng, self.np_rng = random.Random(seed), np.random.default_rng(seed)
        self.articles = 0
        self.next_article, self.next_story = 1, 1
        self.stories = 0
        self.entity_df: Counter[str] = Counter()
        self.real_df = Counter(term for t in templates for term in t.terms)
        self.jitter = {term: self.rng.lognormvariate(0, 0.3) for term in sorted(self.real_df)}
        self.rebuild: list[tuple[str, str]] = []  # (drop statement, create statement)

    def _scaled_df(self, term: str, size: int) -> int:
        return min(size, round(self.real_df[term] * size / len(self.templates) * self.jitter[term]))

    def grow(self, target: int) -> LoadReport:
        stories_before = self.stories
        generate_s = copy_s = 0.0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            first = self.articles == 0
            # The children's placements took ids and count as corpus: continue after them.
            count, top_article, top_story = conn.execute(
                "SELECT count(*), coalesce(max(id), 0), (SELECT coalesce(max(id), 0) FROM stories) FROM articles"
            ).fetchone() or (0, 0, 0)
            self.articles, self.next_article, self.next_story = count, top_article + 1, top_story + 1
            if first:
                self._capture_indexes(conn)
            conn.execute("SET session_replication_role = replica")  # no FK triggers: the rows are consistent
            for drop, _ in self.rebuild:
                conn.execute(drop)
            added = target - self.articles
            remaining, real_clusters = added, first
            while remaining > 0:
                started = time.perf_counter()
                chunk = Chunk()
                made = 0
                if real_clusters:
                    for index in range(len(self.templates)):
                        made += self._story(chunk, min(remaining - made, 5), template=index, real=True)
                    real_clusters = False
                while made < min(remaining, CHUNK):
                    made += self._story(chunk, remaining - made)
                generate_s += time.perf_counter() - started
                started = time.perf_counter()
                self._copy(conn, chunk)
                copy_s += time.perf_counter() - started
                remaining -= made
            started = time.perf_counter()
            self._statistics(conn, target, first)
            conn.execute("SET session_replication_role = DEFAULT")
            conn.execute("SET maintenance_work_mem = '1GB'")
            conn.execute(f"SELECT setval('articles_id_seq', {self.next_article - 1})")
            conn.execute(f"SELECT setval('stories_id_seq', {self.next_story - 1})")
            for _, create in self.rebuild:
                conn.execute(create)
            index_s = time.perf_counter() - started
            started = time.perf_counter()
            conn.execute("VACUUM (ANALYZE) articles, article_bands, story_terms, stories, term_stats, meta")
            conn.execute("CHECKPOINT")
            vacuum_s = time.perf_counter() - started
            sizes = {
                table: int(conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,)).fetchone()[0])  # type: ignore[index]
                for table in ("articles", "article_bands", "story_terms", "stories", "term_stats")
            }
        self.articles = target
        return LoadReport(target, added, self.stories - stories_before, generate_s, copy_s, index_s, vacuum_s, sizes)

    def _capture_indexes(self, conn: psycopg.Connection[Any]) -> None:
        constraints = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE contype IN ('p', 'u') AND conrelid::regclass::text = ANY(%s) AND conname <> ALL(%s)",
            (list(REBUILT_TABLES), list(KEPT)),
        ).fetchall()
        for table, name, definition in constraints:
            self.rebuild.append(
                (
                    f"ALTER TABLE {table} DROP CONSTRAINT {name}",
                    f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}",
                )
            )
        backing = [name for _, name, _ in constraints] + list(KEPT)
        for name, definition in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) AND indexname <> ALL(%s)"
            " ORDER BY indexname",
            (list(REBUILT_TABLES), backing),
        ):
            self.rebuild.append((f"DROP INDEX {name}", definition))

    def _signature(self, parent: np.ndarray, low: float, high: float, shingles: int) -> np.ndarray:
        """The parent's signature with a random share in [low, high] of its values replaced by random ones."""
        values = parent.copy()
        mask = self.np_rng.random(nearcopy.NUM_PERM) < self.rng.uniform(low, high)
        values[mask] = self.np_rng.integers(0, 3 * 2**32 // max(shingles, 1), int(mask.sum()), dtype=np.uint64)
        return values

    def _story_vector(self, template: Template, real: bool) -> dict[str, float]:
        if real:
            return dict(template.vector)
        rng = self.rng
        keep = rng.uniform(0.4, 0.8)
        vector = {t: w * rng.lognormvariate(0, 0.25) for t, w in template.vector if rng.random() < keep}
        if rng.random() < 0.5:
            other = rng.choice(self.templates)
            for t, w in other.vector[: rng.randint(5, 20)]:
                vector[t] = vector.get(t, 0.0) + 0.5 * w
        top = template.vector[0][1] if template.vector else 0.2
        for _ in range(rng.randint(2, 7)):
            entity = int(self.np_rng.zipf(1.15)) % ENTITIES
            vector[f"n{entity:x}q"] = top * rng.uniform(0.5, 1.2)
        norm = math.sqrt(sum(w * w for w in vector.values())) or 1.0
        ranked = sorted(vector.items(), key=lambda kv: (-kv[1], kv[0]))[: PARAMS.vector_terms]
        return {t: round(w / norm, 6) for t, w in ranked}

    def _story(self, chunk: Chunk, cap: int, template: int | None = None, real: bool = False) -> int:
        """One story and its articles into the chunk; returns how many articles."""
        rng = self.rng
        if cap <= 0:
            return 0
        index = rng.randrange(len(self.templates)) if template is None else template
        tpl = self.templates[index]
        if real:
            size = rng.randint(2, 5)
        elif rng.random() < 0.6:
            size = 1
        else:
            size = 2 + min(13, int(self.np_rng.geometric(0.3)) - 1)
        size = min(size, cap)
        story_id = self.next_story
        self.next_story += 1
        self.stories += 1
        t0 = START + timedelta(seconds=rng.uniform(0, SPAN_S - 7 * 86400))
        offsets = sorted(min(6 * 86400, rng.expovariate(1 / 86400)) for _ in range(size - 1))
        times = [t0, *(t0 + timedelta(seconds=offset) for offset in offsets)]
        vector = self._story_vector(tpl, real)
        terms_json = _esc(json.dumps(vector, ensure_ascii=False))
        members: list[tuple[int, np.ndarray, int]] = []  # id, signature, shingles
        outlets: set[str] = set()
        originals = 0
        event_dates: list[date] = []
        title = tpl.title
        if not real and rng.random() < 0.3:
            title = f"{rng.choice(RUBRICS)} : {title}"
        headline = title
        for position, published in enumerate(times):
            article_id = self.next_article
            self.next_article += 1
            source = rng.choices(OUTLETS, cum_weights=OUTLET_CUM)[0]
            outlets.add(source)
            if position == 0:
                shingles = round(tpl.shingles * rng.uniform(0.6, 1.1)) if not real else tpl.shingles
                sig = (
                    self._signature(tpl.signature, 0.0, 0.1, shingles)
                    if real
                    else self._signature(tpl.signature, 0.9, 1.0, shingles)
                )
                method, score, dup, sim, matched_story = "new_story", None, None, None, None
            elif real or rng.random() < REPRINT_SHARE:
                parent_id, parent_sig, parent_shingles = rng.choice(members)
                share = rng.uniform(0.05, 0.35)
                shingles = round(parent_shingles * rng.uniform(0.9, 1.05))
                sig = self._signature(parent_sig, share, share, shingles)
                sim = round(float(np.mean(sig == parent_sig)), 4)
                method, score, dup, matched_story = "near_copy", sim, parent_id, story_id
            else:
                shingles = round(tpl.shingles * rng.uniform(0.6, 1.1))
                sig = self._signature(tpl.signature, 0.9, 1.0, shingles)
                method, score, dup, sim = "story_match", round(rng.uniform(0.15, 0.6), 4), None, None
                matched_story = story_id
            if method != "near_copy":
                originals += 1
            members.append((article_id, sig, shingles))
            event_day = published.date() - timedelta(days=rng.randint(0, 2)) if rng.random() < 0.25 else None
            if event_day is not None:
                event_dates.append(event_day)
            start = rng.randrange(max(1, len(tpl.words) - 60))
            text = " ".join(w for w in tpl.words[start : start + rng.randint(45, 75)] if rng.random() > 0.08)
            fetched = published + timedelta(seconds=rng.randint(60, 1800))
            url = f"https://www.{source}.example.fr/{published:%Y/%m}/t{index:03d}-{article_id}.html"
            chunk.articles.append(
                "\t".join(
                    (
                        str(article_id),
                        url,
                        _esc(title),
                        _esc(text),
                        source,
                        "\\N",
                        published.isoformat(),
                        fetched.isoformat(),
                        _opt(event_day),
                        "fr",
                        str(story_id),
                        _opt(dup),
                        _opt(sim),
                        method,
                        _opt(score),
                        _opt(dup),
                        _opt(matched_story),
                        "\\N",
                        terms_json,
                        "\\\\x" + sig.astype("<u8").tobytes().hex(),
                        str(shingles),
                        "\\N",
                        fetched.isoformat(),
                    )
                )
            )
            for band in range(nearcopy.BANDS):
                chunk.band_keys.append(nearcopy._band_key(band, sig[band * nearcopy.ROWS : (band + 1) * nearcopy.ROWS]))
                chunk.band_ids.append(article_id)
        centroid_all = {t: w * originals * rng.uniform(0.9, 1.1) for t, w in vector.items()}
        ranked = sorted(centroid_all.items(), key=lambda kv: (-kv[1], kv[0]))[: PARAMS.centroid_terms]
        centroid = {t: round(w, 6) for t, w in ranked}
        for term in centroid:
            if term not in self.real_df:
                self.entity_df[term] += size
        first, last = times[0], times[-1]
        event_dates.sort()
        story_event = event_dates[(len(event_dates) - 1) // 2] if event_dates else None
        chunk.stories.append(
            "\t".join(
                (
                    str(story_id),
                    _esc(headline),
                    first.isoformat(),
                    last.isoformat(),
                    str(size),
                    str(len(outlets)),
                    _esc(json.dumps(centroid, ensure_ascii=False)),
                    _opt(story_event),
                    first.isoformat(),
                    last.isoformat(),
                )
            )
        )
        week = grouping.week_of(first)
        for term, weight in ranked[: PARAMS.index_terms]:
            chunk.story_terms.append(f"{story_id}\t{_esc(term)}\t{week}\t{round(weight, 6)}")
        return size

    def _copy(self, conn: psycopg.Connection[Any], chunk: Chunk) -> None:
        with conn.transaction(), conn.cursor() as cur:
            statements = (
                ("COPY stories (id, title, first_published_at, last_published_at, article_count, outlet_count,"
                 " centroid, event_date, created_at, updated_at) FROM STDIN", chunk.stories),
                ("COPY articles (id, url, title, text, source, author, published_at, fetched_at, event_date,"
                 " language, story_id, duplicate_of_id, duplicate_similarity, placement_method, placement_score,"
                 " matched_article_id, matched_story_id, feed_id, terms, minhash, shingle_count, raw_html,"
                 " created_at) FROM STDIN", chunk.articles),
                ("COPY story_terms (story_id, term, week, weight) FROM STDIN", chunk.story_terms),
            )  # fmt: skip
            for statement, lines in statements:
                with cur.copy(statement) as copy:
                    for start in range(0, len(lines), 5000):
                        copy.write("\n".join(lines[start : start + 5000]) + "\n")
            with cur.copy("COPY article_bands (band_key, article_id) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(_bands_copy_data(chunk.band_keys, chunk.band_ids))

    def _statistics(self, conn: psycopg.Connection[Any], target: int, first: bool) -> None:
        """term_stats and meta brought to the new size (increments: placements made earlier keep counting)."""
        increments = {
            term: self._scaled_df(term, target) - self._scaled_df(term, self.articles) for term in self.jitter
        }
        increments.update(self.entity_df)
        self.entity_df = Counter()
        rows = [f"{_esc(term)}\t{n}" for term, n in sorted(increments.items()) if n > 0]
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE df_increments (term varchar(64), df integer) ON COMMIT DROP")
            with cur.copy("COPY df_increments (term, df) FROM STDIN") as copy:
                copy.write("\n".join(rows) + "\n")
            cur.execute(
                "INSERT INTO term_stats (term, df) SELECT term, df FROM df_increments"
                " ON CONFLICT (term) DO UPDATE SET df = term_stats.df + excluded.df"
            )
            cur.execute(
                "INSERT INTO meta (key, value) VALUES ('document_count', %s) ON CONFLICT (key)"
                " DO UPDATE SET value = (meta.value::integer + %s)::text",
                (str(target - self.articles), target - self.articles),
            )
            if first:
                cur.execute(
                    "INSERT INTO meta (key, value) VALUES ('minhash_fingerprint', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (nearcopy.FINGERPRINT,),
                )


# --- the measuring child -----------------------------------------------------------------------------------------


@dataclass
class StatementTimes:
    """Cursor time per kind of statement, and the slowest SELECT of each kind (to EXPLAIN)."""

    on: bool = False
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)
    slowest: dict[str, tuple[float, str, Any]] = field(default_factory=dict)
    commit_started: float = 0.0
    locked_at: float = 0.0  # when this transaction's cluster-wide lock was granted
    holds: list[float] = field(default_factory=list)  # how long each transaction held it, in seconds
    held: defaultdict[str, float] = field(
        default_factory=lambda: defaultdict(float)
    )  # seconds of each kind of statement run while holding it


KINDS = (
    ("pg_advisory_xact_lock", "placement lock"),
    ("FROM article_bands JOIN articles", "near_copy_candidates"),
    ("SELECT st.story_id", "stories_sharing"),
    ("SELECT term_stats.term", "document_frequencies"),
    ("WHERE articles.url IN", "article_ids_by_url"),
    ("SELECT stories.id, stories.centroid", "story_candidates"),
    ("LEFT OUTER JOIN articles ON articles.story_id", "story_state"),
    ("JOIN term_stats t ON", "document_frequencies"),
    ("INSERT INTO term_stats", "add_document_terms: term_stats"),
)
_VERB = re.compile(r"^\s*(INSERT INTO|UPDATE|DELETE FROM|SELECT\b.*?\bFROM)\s+(\w+)", re.S)


def kind_of(statement: str) -> str:
    for needle, kind in KINDS:
        if needle in statement:
            return kind
    match = _VERB.match(statement)
    if not match:
        return statement.split(None, 1)[0] if statement.strip() else "?"
    verb = "SELECT" if match.group(1).startswith("SELECT") else match.group(1)
    return f"{verb} {match.group(2)}"


def instrument(
    engine: Engine, times: StatementTimes, key: Callable[[str], str] = kind_of, *, commits: bool = True
) -> None:
    """Time every statement under ``key(statement)`` while ``times.on``; with ``commits``, COMMIT too."""

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        now = time.perf_counter()
        seconds = now - conn.info.pop("bench_started")
        if "pg_advisory_xact_lock" in statement:
            times.locked_at = now  # granted: held from here to the end of the transaction
        if not times.on:
            return
        kind = key(statement)
        times.seconds[kind] += seconds
        times.calls[kind] += 1
        if times.locked_at:
            times.held[kind] += seconds
        slowest = times.slowest.get(kind)
        if not executemany and statement.lstrip().startswith("SELECT") and (slowest is None or seconds > slowest[0]):
            times.slowest[kind] = (seconds, statement, parameters)

    def commit_started(conn: Any) -> None:
        times.commit_started = time.perf_counter()

    def committed(session: Session) -> None:
        now = time.perf_counter()
        if times.on and times.commit_started:
            times.seconds["COMMIT"] += now - times.commit_started
            times.calls["COMMIT"] += 1
        if times.on and times.locked_at:
            times.holds.append(now - times.locked_at)
            times.held["COMMIT"] += now - times.commit_started
        times.commit_started = times.locked_at = 0.0

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    if commits:
        event.listen(engine, "commit", commit_started)
        event.listen(Session, "after_commit", committed)


def memory_kib() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process, from /proc/self/status. Not getrusage's ru_maxrss: Linux carries
    the high-water mark across fork and exec, so a child's ru_maxrss starts at its parent's RSS."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _light(text: str, rng: random.Random) -> str:
    """A reprint: a few words dropped here and there."""
    return "\n".join(" ".join(w for w in p.split() if rng.random() > 0.03) for p in text.split("\n"))


def _heavy(tpl: Template, other: Template, rng: random.Random, mix: int) -> str:
    """Another outlet's own coverage: most sentences, reordered, a quarter of the words changed or dropped."""
    pool = [w for w in other.words if len(w) > 3] or other.words
    kept = [s for s in tpl.sentences if rng.random() < 0.75] or tpl.sentences[:3]
    rng.shuffle(kept)
    kept += rng.sample(other.sentences, min(mix, len(other.sentences)))
    out = []
    for sentence in kept:
        words = []
        for word in sentence.split():
            roll = rng.random()
            if roll < 0.13:
                continue
            words.append(rng.choice(pool) if roll < 0.25 else word)
        out.append(" ".join(words))
    return "\n".join(" ".join(out[i : i + 3]) for i in range(0, len(out), 3))


def new_articles(db: Any, templates: list[Template], count: int, seed: int, label: str) -> list[Incoming]:
    rng = random.Random(seed)
    top = int(db.execute("SELECT max(id) FROM articles").fetchone()[0])
    picks = [rng.randint(1, top) for _ in range(count * 2)]
    rows = db.execute("SELECT url, published_at FROM articles WHERE id = ANY(%s)", (picks,)).fetchall()
    existing = [(int(m.group(1)), p) for url, p in rows if (m := _TEMPLATE_URL.search(url))]
    rng.shuffle(existing)
    result = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.25 or not existing:
            index = rng.randrange(len(templates))
            tpl = templates[index]
            text, published = _light(tpl.text, rng), START + timedelta(seconds=rng.uniform(0, SPAN_S))
        elif roll < 0.65:
            index, moment = existing[i % len(existing)]
            tpl = templates[index]
            text = _heavy(tpl, rng.choice(templates), rng, 0)
            published = moment + timedelta(seconds=rng.uniform(0, 2 * 86400))
        else:
            tpl = rng.choice(templates)
            text = _heavy(tpl, rng.choice(templates), rng, 3)
            published = START + timedelta(seconds=rng.uniform(0, SPAN_S))
        title = " ".join(w for w in tpl.title.split() if rng.random() > 0.15) or tpl.title
        source = rng.choices(OUTLETS, cum_weights=OUTLET_CUM)[0]
        result.append(
            Incoming(
                url=f"https://www.{source}.example.fr/nouveau/{label}-{i}.html",
                fetched_at=published + timedelta(minutes=5),
                title=title,
                text=text,
                published_at=published,
                source=source,
                language="fr",
            )
        )
    return result


def explain(engine: Engine, statement: str, parameters: Any) -> list[str]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
    return [str(row[0]) for row in rows]


def pass_loop(url: str) -> None:
    """Another worker running the periodic regrouping pass over and over (``--pass-beside``), until SIGTERM:
    then it prints its passes and how long each of its transactions held the placement lock, and exits at
    once (a pass cut short rolls back)."""
    storage = Storage(url)
    ingestor = Ingestor(storage)
    times = StatementTimes(on=True)
    instrument(storage.engine, times)
    done = {"passes": 0, "merges": 0}

    def passes() -> None:
        while True:
            done["merges"] += len(ingestor.merge_young_stories() or [])
            done["passes"] += 1

    def stop(_signum: int, _frame: Any) -> None:
        print(json.dumps({**done, "holds_ms": [h * 1000 for h in times.holds]}), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=passes, daemon=True).start()
    while True:
        time.sleep(1)


def measure(url: str, placements: int, seed: int, label: str, beside: bool = False) -> dict[str, Any]:
    templates = load_templates()
    storage = Storage(url)
    ingestor = Ingestor(storage)
    times = StatementTimes()
    instrument(storage.engine, times)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as db:
        incoming = new_articles(db, templates, placements + WARMUP, seed, label)
    prepared = [ingestor.prepare(item) for item in incoming]
    rss_before, peak_before = memory_kib()
    latencies: list[float] = []
    methods: Counter[str] = Counter()
    rss_warm = peak_warm = 0
    cpu_ms: list[float] = []
    touched: set[int] = set()
    load_before = 0.0
    settles: list[tuple[float, float]] = []  # wall and CPU seconds of each timed Ingestor.settle
    placement_holds: list[float] = []
    settle_holds: list[float] = []
    beside_command = [sys.executable, __file__, "--pass-loop", url]
    collections: list[float] = []  # the placing process's full garbage collections, in seconds: pauses
    collecting = [0.0]

    def collected(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2 and times.on:
            if phase == "start":
                collecting[0] = time.perf_counter()
            else:
                collections.append(time.perf_counter() - collecting[0])

    gc.callbacks.append(collected)
    loop: subprocess.Popen[str] | None = None
    placement_held: defaultdict[str, float] = defaultdict(float)
    settle_held: defaultdict[str, float] = defaultdict(float)
    for i, item in enumerate(prepared):
        if i == WARMUP:
            rss_warm, peak_warm = memory_kib()
            times.on = True
        if i == WARMUP:
            load_before = os.getloadavg()[0]
            if beside:
                loop = subprocess.Popen(beside_command, stdout=subprocess.PIPE, text=True)
        started, cpu = time.perf_counter(), time.process_time()
        outcome = ingestor.store_many([item], regroup=False)[0]
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if i >= WARMUP:
            latencies.append(elapsed * 1000)
            cpu_ms.append(cpu * 1000)
            methods[outcome.method] += 1
            touched.add(outcome.story_id)
            placement_holds += times.holds
            for kind, held in times.held.items():
                placement_held[kind] += held
        times.holds.clear()
        times.held.clear()
        if (i + 1) % BURST == 0:  # the worker's queue runs dry: it groups again what the burst touched
            started, cpu = time.perf_counter(), time.process_time()
            ingestor.settle()
            if i >= WARMUP:
                settles.append((time.perf_counter() - started, time.process_time() - cpu))
                settle_holds += times.holds
                for kind, held in times.held.items():
                    settle_held[kind] += held
            times.holds.clear()
            times.held.clear()
    load_after = os.getloadavg()[0]
    beside_pass = None
    if loop is not None:
        loop.terminate()
        beside_pass = json.loads(loop.communicate(timeout=60)[0])
    rss_placed, peak_placed = memory_kib()
    started = time.perf_counter()
    merges = ingestor.merge_young_stories()  # the periodic pass, over the stories the placements changed
    merge_s = time.perf_counter() - started
    times.on = False
    pass_holds = list(times.holds)
    plans = {
        kind: (seconds * 1000, explain(storage.engine, statement, parameters))
        for kind, (seconds, statement, parameters) in sorted(times.slowest.items())
        if kind in ("near_copy_candidates", "stories_sharing", "story_candidates", "story_state")
    }
    storage.engine.dispose()
    return {
        "latencies_ms": latencies,
        "cpu_ms": cpu_ms,
        "loadavg": [load_before, load_after],
        "methods": dict(methods),
        "merge_pass": [merge_s, len(touched), len(merges or [])],
        "beside": beside_pass,
        "full_collections_ms": [c * 1000 for c in collections],
        "settles": [[wall * 1000, cpu * 1000] for wall, cpu in settles],
        "lock_holds_ms": {
            "placement": [s * 1000 for s in placement_holds],
            "regrouping": [s * 1000 for s in settle_holds],
            "pass": [s * 1000 for s in pass_holds],
        },
        "held_ms": {
            "placement": {k: v * 1000 for k, v in placement_held.items()},
            "regrouping": {k: v * 1000 for k, v in settle_held.items()},
        },
        "statements": {k: [times.seconds[k] * 1000, times.calls[k]] for k in times.seconds},
        "plans": plans,
        "memory_kib": {
            "after prepare": [rss_before, peak_before],
            "after warm-up": [rss_warm, peak_warm],
            "after the placements": [rss_placed, peak_placed],
            "after the merge pass": list(memory_kib()),
        },
    }


# --- the parent ---------------------------------------------------------------------------------------------------


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def _plan_summary(lines: list[str]) -> Iterator[str]:
    """The plan's node lines and totals, without the per-node detail (filters, conditions)."""
    for line in lines:
        text = line.strip()
        if "->" in line or line == lines[0] or text.startswith(("Buffers:", "Execution Time", "Planning Time")):
            if len(text) > 150:
                text = text[:147] + "..."
            depth = (len(line) - len(line.lstrip())) // 2
            yield "  " * depth + text


def report_load(load: LoadReport) -> None:
    print(
        f"\ncorpus {load.size:,} articles (+{load.added:,}, {load.stories:,} stories):"
        f" generate {load.generate_s:.1f} s, COPY {load.copy_s:.1f} s, term_stats + index rebuild {load.index_s:.1f} s,"
        f" VACUUM ANALYZE + CHECKPOINT {load.vacuum_s:.1f} s"
        f" = {load.generate_s + load.copy_s + load.index_s + load.vacuum_s:.1f} s"
    )
    print("  table sizes (with indexes and TOAST): " + ", ".join(f"{t} {_mib(s)}" for t, s in load.sizes.items()))


def report_measure(result: dict[str, Any], seconds: float) -> tuple[float, float, int]:
    lat = np.array(result["latencies_ms"])
    n = len(lat)
    p50, p95, p99 = (float(np.percentile(lat, q)) for q in (50, 95, 99))
    print(
        f"  placement of one article, {n} timed after {WARMUP} warm-up (child ran {seconds:.0f} s):"
        f" p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {lat.max():.1f} ms, mean {lat.mean():.1f} ms"
    )
    if "cpu_ms" in result:
        cpu = np.array(result["cpu_ms"])
        print(
            f"  CPU time of the placing process per placement: p50 {np.percentile(cpu, 50):.1f} ms,"
            f" mean {cpu.mean():.1f} ms"
            f" (the rest of the wall clock is waiting: PostgreSQL, other processes);"
            f" 1-min load average {result['loadavg'][0]:.1f} -> {result['loadavg'][1]:.1f} on {os.cpu_count()} CPUs"
        )
    print("  methods: " + ", ".join(f"{m} {c}" for m, c in sorted(result["methods"].items())))
    if result.get("settles"):
        wall, cpu = np.array(result["settles"]).T
        print(
            f"  regrouping after every {BURST} placements ({len(wall)} settles): p50 {np.percentile(wall, 50):.0f} ms,"
            f" max {wall.max():.0f} ms; per placed article {wall.sum() / n:.1f} ms wall, {cpu.sum() / n:.1f} ms CPU"
        )
    if "merge_pass" in result:
        merge_s, touched, merges = result["merge_pass"]
        print(
            f"  periodic regrouping pass over the {touched} stories these placements changed and their indexed"
            f" neighbours: {merge_s:.2f} s in all, {merges} merges"
        )
    if "full_collections_ms" in result:
        pauses = result["full_collections_ms"] or [0.0]
        print(
            f"  full garbage collections in the placing process: {len(result['full_collections_ms'])},"
            f" longest {max(pauses):.1f} ms"
        )
    if result.get("beside"):
        beside = result["beside"]
        held = np.array(beside["holds_ms"] or [0.0])
        print(
            f"  beside them, another process ran the regrouping pass throughout: {beside['passes']} passes done,"
            f" {beside['merges']} merges; it held the placement lock per transaction ({len(beside['holds_ms'])}):"
            f" p50 {np.percentile(held, 50):.1f} ms, p99 {np.percentile(held, 99):.1f} ms, max {held.max():.1f} ms"
        )
    for what, holds in result.get("lock_holds_ms", {}).items():
        if holds:
            held = np.array(holds)
            print(
                f"  placement lock held per transaction ({what}, {len(held)} transactions): p50"
                f" {np.percentile(held, 50):.1f} ms, p99 {np.percentile(held, 99):.1f} ms, max {held.max():.1f} ms"
            )
    for what, held_ms in result.get("held_ms", {}).items():
        count = len(result["lock_holds_ms"][what]) or 1
        top = sorted(held_ms.items(), key=lambda kv: -kv[1])[:6]
        print(
            f"  under the lock ({what}), mean ms per transaction: "
            + ", ".join(f"{kind} {ms / count:.1f}" for kind, ms in top)
        )
    statements = sorted(result["statements"].items(), key=lambda kv: -kv[1][0])
    total = sum(ms for ms, _ in result["statements"].values())
    print(f"  per placement, mean ms [statements]; rest (Python, driver) {lat.mean() - total / n:.2f} ms:")
    for kind, (ms, calls) in statements:
        print(f"    {kind:<34} {ms / n:6.2f} ms  [{calls / n:.1f}]")
    memory = result["memory_kib"]
    print(
        "  child RSS (VmRSS / peak VmHWM): "
        + ", ".join(f"{when} {rss / 1024:.0f} / {peak / 1024:.0f} MiB" for when, (rss, peak) in memory.items())
    )
    for kind, (ms, plan) in result["plans"].items():
        print(f"  slowest {kind} ({ms:.1f} ms), EXPLAIN (ANALYZE, BUFFERS) re-run:")
        for line in _plan_summary(plan):
            print(f"      {line}")
    return p50, p95, int(memory["after the placements"][1])


def child_args(seed: int, size: int, found: int) -> list[str]:
    """The measuring child's seed and label: on a database found holding ``found`` articles (earlier runs'
    placements included), the new articles' URLs differ from those of earlier runs."""
    return ["--seed", str(seed + size), "--label", f"{size}r{found}" if found else str(size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="corpus sizes, ascending (default %(default)s)")
    parser.add_argument("--postgres", metavar="ADMIN_URL", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--placements", type=int, default=400, help="timed placements per size (default %(default)s)")
    parser.add_argument("--database", metavar="URL", help="an existing corpus database: grown, measured, kept")
    parser.add_argument("--keep", action="store_true", help="keep the database built (its URL is printed)")
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--measure", metavar="DATABASE_URL", help=argparse.SUPPRESS)  # the child
    parser.add_argument("--label", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--pass-beside", action="store_true", help="another process runs the regrouping pass throughout the placements"
    )
    parser.add_argument("--pass-loop", metavar="DATABASE_URL", help=argparse.SUPPRESS)  # that process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.placements, args.seed, args.label, args.pass_beside)))
        return
    if args.pass_loop:
        pass_loop(args.pass_loop)
    sizes = [int(s) for s in args.sizes.split(",")]
    machine()
    started = time.perf_counter()
    templates = load_templates()
    print(f"{len(templates)} real texts (rpm2-dev + seeds) loaded and signed in {time.perf_counter() - started:.1f} s")
    summary: list[tuple[int, float, float, int]] = []
    with database(args.postgres, args.database, args.keep) as url:
        Storage(url).ensure_schema(upgrade=True)
        corpus = Corpus(psycopg_url(url), templates, args.seed)
        held = article_count(psycopg_url(url))
        found = held if held >= sizes[-1] else 0
        for size in [s for s in sizes if s > held] or [held]:
            if size > held:
                report_load(corpus.grow(size))
            else:
                print(f"\ncorpus {held:,} articles (as found)")
            started = time.perf_counter()
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure",
                    url,
                    "--placements",
                    str(args.placements),
                    *child_args(args.seed, size, found),
                    *(["--pass-beside"] if args.pass_beside else []),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                raise SystemExit(f"measuring child exited {child.returncode}:\n{child.stderr[-3000:]}")
            p50, p95, peak = report_measure(json.loads(child.stdout), time.perf_counter() - started)
            summary.append((size, p50, p95, peak))
    print("\nsummary (goals: p95 <= 25 ms at 1M, p95 growth from the smallest size <= 2x, memory flat):")
    base_p95, base_peak = summary[0][2], summary[0][3]
    for size, p50, p95, peak in summary:
        print(
            f"  {size:>9,} articles: p50 {p50:5.1f} ms  p95 {p95:5.1f} ms ({p95 / base_p95:4.2f}x)"
            f"  child peak RSS {peak / 1024:4.0f} MiB ({peak / base_peak:4.2f}x)"
        )


if __name__ == "__main__":
    main()
