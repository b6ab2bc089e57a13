"""Placement in batches and the story_terms index: same stories as one article at a time, found by index."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from benchmarks.corpus import RPM2
from monitor.daemon.service import schedule_fired
from monitor.desk.read import Desk
from monitor.errors import StorageError
from monitor.grouping.features import MAX_TERM_CHARS, _norm, event_date, week_of
from monitor.grouping.merging import Placed, _Members, merge_plan, refine_plan
from monitor.grouping.params import StoryParams
from monitor.grouping.scoring import _mixed_score
from monitor.grouping.state import Candidate, majority_date
from monitor.pipeline.importing import import_file
from monitor.pipeline.placement import Ingestor, _moved
from monitor.pipeline.prepare import Incoming
from monitor.storage import Storage
from tests.support import connected, labelled_incoming, made_once, place_online, run_cli

Placements = list[tuple[str, str, str, str | None, float | None]]  # url, story, method, matched, score


def _placements(database_url: str) -> Placements:
    """Each article's story (named by its earliest article's URL), method, matched article and score."""
    with connected(database_url) as db:
        rows = db.execute(
            text(
                "SELECT a.url, (SELECT MIN(b.url) FROM articles b WHERE b.story_id = a.story_id), "
                "a.placement_method, (SELECT m.url FROM articles m WHERE m.id = a.matched_article_id), "
                "a.placement_score FROM articles a ORDER BY a.url"
            )
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def _archive(tmp_path: Path, lines: int) -> Path:
    archive = tmp_path / "rpm2.jsonl"
    rows = RPM2.read_text(encoding="utf-8").splitlines()[:lines]
    first = json.loads(rows[0])  # and a reprint, so the batch also places a near-copy of one of its own
    rows.insert(5, json.dumps({**first, "url": "https://reprise.example.fr/a", "source": "reprise"}))
    archive.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return archive


def _import(database_url: str, archive: Path, batch_size: int) -> Placements:
    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    report = import_file(archive, Ingestor(storage), batch_size=batch_size)
    assert report.added == 121 and not report.errors
    storage.engine.dispose()
    return _placements(database_url)


@pytest.fixture(scope="module")
def one_by_one(tmp_path_factory: pytest.TempPathFactory) -> Placements:
    """The placements of 120 articles and a reprint imported one at a time on SQLite: what batches on each
    engine must give, made once for the run."""

    def make(directory: Path) -> Placements:
        return _import(f"sqlite:///{directory}/single.db", _archive(directory, 120), batch_size=1)

    return [tuple(row) for row in made_once(tmp_path_factory, "one-by-one", make)]


@pytest.mark.slow
def test_batch_size_does_not_change_the_stories(tmp_path: Path, database_url: str, one_by_one: Placements) -> None:
    batched = _import(database_url, _archive(tmp_path, 120), batch_size=64)
    assert [row[:2] for row in batched] == [row[:2] for row in one_by_one]  # same stories, each named alike
    methods = {method for _, _, method, _, _ in batched}
    assert {"near_copy", "story_match", "new_story"} <= methods


def test_story_terms_index_follows_each_story(tmp_path: Path, database_url: str) -> None:
    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    import_file(_archive(tmp_path, 60), Ingestor(storage))
    params = StoryParams()
    with connected(database_url) as db:
        stories = db.execute(text("SELECT id, centroid, first_published_at FROM stories WHERE article_count > 0")).all()
        merged = set(db.execute(text("SELECT id FROM stories WHERE merged_into_id IS NOT NULL")).scalars())
        index = db.execute(text("SELECT story_id, term, week, weight FROM story_terms")).all()
        counts = dict(db.execute(text("SELECT story_id, COUNT(*) FROM articles GROUP BY story_id")).all())
        listed = dict(db.execute(text("SELECT id, article_count FROM stories WHERE article_count > 0")).all())
        originals = dict(
            db.execute(
                text("SELECT story_id, COUNT(*) FROM articles WHERE duplicate_of_id IS NULL GROUP BY story_id")
            ).all()
        )
        summed = dict(db.execute(text("SELECT id, original_count FROM stories WHERE article_count > 0")).all())
    assert listed == counts  # summaries kept incrementally agree with the articles
    assert summed == originals and sum(counts.values()) == sum(originals.values()) + 1  # the one reprint
    by_story: dict[int, dict[str, float]] = {}
    for story_id, term, _, weight in index:
        by_story.setdefault(story_id, {})[term] = weight
    assert len(stories) > 5
    assert not merged & set(by_story)  # a merged story is no longer found through the index
    for story_id, centroid, first in stories:
        centroid = json.loads(centroid) if isinstance(centroid, str) else centroid
        top = sorted(centroid.items(), key=lambda kv: (-kv[1], kv[0]))[: params.index_terms]
        assert by_story[story_id] == dict(top)
        first = datetime.fromisoformat(first) if isinstance(first, str) else first  # SQLite: naive UTC text
        assert {week for sid, _, week, _ in index if sid == story_id} == {
            week_of(first.replace(tzinfo=first.tzinfo or UTC))
        }


def test_upgrade_indexes_existing_stories(tmp_path: Path, database_url: str) -> None:
    """A database built before the index existed gets its stories indexed by the migration."""
    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    import_file(_archive(tmp_path, 30), Ingestor(storage))
    engine = create_engine(database_url)
    with engine.begin() as db:
        before = db.execute(text("SELECT story_id, term, week, weight FROM story_terms ORDER BY 1, 2")).all()
    command.downgrade(storage._alembic_config(), "0003")
    assert "story_terms" not in inspect(engine).get_table_names()
    command.upgrade(storage._alembic_config(), "head")
    with engine.connect() as db:
        after = db.execute(text("SELECT story_id, term, week, weight FROM story_terms ORDER BY 1, 2")).all()
    engine.dispose()
    assert before and after == before


@pytest.mark.slow
def test_live_regrouping_joins_pieces_and_records_why(tmp_path: Path, database_url: str) -> None:
    """Placed one at a time, rpm2-dev would start some events as several stories and put an event's first
    articles in a neighbour's story. Each placement groups its neighbourhood again: pieces are joined (the
    emptied story kept as a record, merged_into_id and merge_score), articles moved, and every change is in
    story_events. The periodic pass, a safety net, then finds nothing left to do, once per period."""
    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    ingestor = Ingestor(storage)
    place_online(ingestor, RPM2)
    yearly = schedule_fired("0 0 1 1 *")
    assert ingestor.merge_young_stories(yearly) == []
    assert ingestor.merge_young_stories(yearly) is None  # done for this period
    with connected(database_url) as db:
        records = db.execute(
            text("SELECT id, merged_into_id, merge_score FROM stories WHERE merged_into_id IS NOT NULL")
        ).all()
        live = dict(db.execute(text("SELECT id, article_count FROM stories WHERE article_count > 0")).all())
        counted = dict(db.execute(text("SELECT story_id, COUNT(*) FROM articles GROUP BY story_id")).all())
        moved = db.execute(
            text(
                "SELECT id, story_id, matched_story_id, placement_score FROM articles WHERE placement_method = 'moved'"
            )
        ).all()
        events = db.execute(
            text("SELECT kind, story_id, other_story_id, article_id, score, reason FROM story_events ORDER BY id")
        ).all()
        reprints_apart = db.execute(
            text(
                "SELECT COUNT(*) FROM articles a JOIN articles o ON o.id = a.duplicate_of_id"
                " WHERE a.story_id <> o.story_id"
            )
        ).scalar_one()
        indexed = {row[0] for row in db.execute(text("SELECT DISTINCT story_id FROM story_terms"))}
    assert records, "rpm2-dev placed online starts pieces of one event apart, joined since"
    merged_events = {(e.story_id, e.other_story_id) for e in events if e.kind == "merged"}
    assert {(r.id, r.merged_into_id) for r in records} <= merged_events
    assert all(r.merge_score is not None for r in records)
    assert live == counted  # every article sits in a live story, counts summarised again
    assert moved, "rpm2-dev placed online puts some articles in a neighbouring event's story"
    assert all(m.story_id == m.matched_story_id and m.story_id in live for m in moved)
    last_move = {e.article_id: e.story_id for e in events if e.kind == "moved"}
    assert all(last_move[m.id] == m.story_id for m in moved)  # the history ends where the article is
    assert all(e.reason and e.other_story_id != e.story_id for e in events)
    assert reprints_apart == 0  # reprints follow their original
    assert indexed == set(live)  # emptied stories leave the candidate index

    # The story pages tell each kind of event from both sides: articles came in on one, left the other.
    desk = Desk(database_url)
    try:
        for kind in {e.kind for e in events}:
            e = next(e for e in events if e.kind == kind)
            here, there = desk.story(e.story_id), desk.story(e.other_story_id)
            assert here is not None and there is not None
            assert (kind, kind != "merged", e.other_story_id) in {
                (h.kind, h.incoming, h.counterpart_id) for h in here.history
            }
            assert (kind, kind == "merged", e.story_id) in {
                (h.kind, h.incoming, h.counterpart_id) for h in there.history
            }
    finally:
        desk.close()
    move = next(e for e in events if e.kind == "moved")
    env = {**os.environ, "MONITOR_DATABASE_URL": database_url}
    shown = run_cli("story", str(move.other_story_id), env=env)
    assert f"article {move.article_id} moved out to story {move.story_id}" in shown.stdout, shown.stdout + shown.stderr


def test_refine_plan_moves_an_article_to_the_event_it_fits() -> None:
    """An article about one event placed in another event's story moves to its own event's story; an article
    alone in its story moves only where placement would have taken it in; sweeps are deterministic."""
    day = datetime(2024, 11, 5, 9, tzinfo=UTC)
    launch = {"appl": 0.6, "iphon": 0.6, "lanc": 0.5}
    fine = {"amend": 0.7, "bruxel": 0.7, "appl": 0.1}

    def placed(article_id: int, story_id: int, vector: dict[str, float], hours: int = 0) -> Placed:
        return Placed(article_id, story_id, day + timedelta(hours=hours), vector)

    articles = [
        placed(1, 10, launch),
        placed(2, 10, {**launch, "prix": 0.3}, 1),
        placed(3, 10, fine, 2),  # came first for its event, joined the launch story
        placed(4, 20, {**fine, "amend": 0.8}, 3),
        placed(5, 20, {**fine, "commiss": 0.4}, 4),
        placed(6, 30, {"meteo": 0.9, "pluie": 0.4}, 5),  # alone, like nothing: stays
    ]
    params = StoryParams()
    plan = refine_plan(articles, params)
    assert set(plan) == {3} and plan[3][0] == 20 and plan[3][1] > params.threshold
    assert refine_plan(articles, params) == plan
    assert refine_plan(articles, params, {10: [30], 20: [30]}) == {}  # 10 and 20 never named as neighbours
    assert refine_plan(articles, replace(params, refine_rounds=0)) == {}
    a_month_later = [
        *articles[:3],
        *(replace(a, published_at=a.published_at + timedelta(days=30)) for a in articles[3:]),
    ]
    assert refine_plan(a_month_later, params) == {}  # beyond a story's span


def test_merge_plan_joins_the_closest_pieces_within_their_neighbourhood() -> None:
    day = datetime(2024, 11, 5, 9, tzinfo=UTC)
    launch = {"appl": 0.6, "iphon": 0.6, "lanc": 0.5}
    launch_too = {"appl": 0.55, "iphon": 0.65, "prix": 0.5}
    other = {"appl": 0.1, "amend": 0.7, "bruxel": 0.7}

    def story(story_id: int, centroid: dict[str, float], days: int = 0, count: int = 1) -> Candidate:
        moment = day + timedelta(days=days)
        return Candidate(story_id, centroid, moment, moment, None, count)

    params = StoryParams()
    pieces = [story(1, launch, count=2), story(2, launch_too), story(3, other)]
    plan = merge_plan(pieces, params)
    assert set(plan) == {2} and plan[2][0] == 1 and plan[2][1] >= params.merge_threshold
    assert merge_plan(pieces, params, {1: [3], 2: [3]}) == {}  # 1 and 2 never named as neighbours
    assert merge_plan([story(1, launch), story(2, launch_too, days=30)], params) == {}  # a month apart


def test_junk_tokens_do_not_break_placement(database_url: str) -> None:
    """A page with a 300-character token (a hash, base64, a run-together string) is stored like any other,
    and the junk does not enter the vocabulary (PostgreSQL would otherwise keep it cut to 64 characters)."""
    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    body = "Le projet a été présenté mardi à Paris. " * 5 + "x" * 300 + " " + "aGVsbG8" * 30
    outcome = Ingestor(storage).ingest(
        Incoming(
            url="https://junk.example.fr/a",
            fetched_at=datetime.now(UTC),
            title="Un titre ordinaire",
            text=body,
            published_at=datetime(2024, 11, 5, 9, tzinfo=UTC),
            source="junk",
        )
    )
    assert outcome.created and outcome.method == "new_story"
    with connected(database_url) as db:
        longest = db.execute(text("SELECT MAX(LENGTH(term)) FROM term_stats")).scalar_one()
        indexed = db.execute(text("SELECT MAX(LENGTH(term)) FROM story_terms")).scalar_one()
    assert longest <= MAX_TERM_CHARS and indexed <= MAX_TERM_CHARS  # junk is not vocabulary


def test_event_date_is_the_median_date_of_the_lead_the_later_of_two() -> None:
    """Dates written at the top of an article say when its event happened; of two, the later is the news and
    the earlier the background it follows (the earlier set a follow-up months before its own story)."""
    params = StoryParams()
    published = datetime(2008, 10, 2, 9, tzinfo=UTC)
    two = "Libérée le 2 juillet, Ingrid Betancourt a été reçue le 1er septembre à l'Élysée, puis a repris la parole."
    assert event_date("Betancourt", two, published, params) == date(2008, 9, 1)
    three = "Le 3 mars, le 10 avril et le 20 mai 2008, trois réunions ont eu lieu."
    assert event_date("Réunions", three, published, params) == date(2008, 4, 10)
    assert event_date("Sans date", "Rien de daté ici, seulement du texte.", published, params) is None
    late = "x" * params.date_lead_chars + " le 5 août"
    assert event_date("Trop loin", late, published, params) is None  # beyond the lead


def test_a_story_is_dated_by_what_most_members_say() -> None:
    """One lead quoting a 2005 precedent must not date a 2008 story: the date most members agree on wins,
    among equals the one nearest the first report (a lower median picked 2005 for two members)."""
    first = datetime(2008, 10, 2, 9, tzinfo=UTC)
    background, event = date(2005, 4, 22), date(2008, 9, 30)
    assert majority_date([background, event], first) == event
    assert majority_date([event, background, date(2008, 10, 1), background], first) == event
    assert majority_date([background, background, event], first) == background  # most members say 2005
    assert majority_date([date(2008, 9, 1), date(2008, 9, 20), date(2008, 10, 1)], first) == date(2008, 9, 20)
    assert majority_date([], first) is None


def test_a_url_met_twice_is_one_article_within_a_batch_and_across_batches(database_url: str) -> None:
    """The second copy of a URL, in the same batch or a later one, is the article stored first (exact_url),
    in its story: the batch's articles are written together, after placement, and still found."""
    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    ingestor = Ingestor(storage)
    rows = [json.loads(line) for line in RPM2.read_text(encoding="utf-8").splitlines()[:3]]
    incoming = labelled_incoming
    first = [ingestor.prepare(incoming(row)) for row in (rows[0], rows[1], rows[0])]
    a, b, again = ingestor.store_many(first)
    assert a.created and b.created and not again.created
    assert (again.method, again.article_id, again.story_id) == ("exact_url", a.article_id, a.story_id)
    later, new = ingestor.store_many([ingestor.prepare(incoming(rows[1])), ingestor.prepare(incoming(rows[2]))])
    assert (later.method, later.article_id, later.story_id, later.created) == (
        "exact_url",
        b.article_id,
        b.story_id,
        False,
    )
    assert new.created and new.article_id not in {a.article_id, b.article_id}
    with connected(database_url) as db:
        stored = db.execute(text("SELECT id, url, story_id FROM articles ORDER BY id")).all()
    storage.engine.dispose()
    assert [tuple(row) for row in stored] == [
        (a.article_id, rows[0]["url"], a.story_id),
        (b.article_id, rows[1]["url"], b.story_id),
        (new.article_id, rows[2]["url"], new.story_id),
    ]


def test_term_statistics_keep_any_term_as_written(database_url: str) -> None:
    """Terms go to PostgreSQL as one separated string per column, split by the server: characters that
    mean something in an array literal come back unchanged, and a term holding the separator is refused
    with the reason before anything is sent."""
    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    awkward = {"a,b": 2, "{x}": 1, "NULL": 3, '"q"': 1, "back\\slash": 1, "l'été": 4, "with space": 1}
    with storage.repository() as repo:
        repo.add_document_terms(awkward, 5)
    with storage.repository() as repo:
        assert repo.document_frequencies([*awkward, "absent"]) == awkward
        assert repo.document_count() == 5
    if storage.engine.dialect.name == "postgresql":
        with pytest.raises(StorageError, match="separator U\\+001F"), storage.repository() as repo:
            repo.add_document_terms({"a\x1fb": 1}, 1)
        with storage.repository() as repo:
            assert repo.document_count() == 5
    storage.engine.dispose()


def test_refinement_scores_a_member_against_the_rest_of_its_story() -> None:
    """The score of staying, from the story's cached squared norm, is the placement score against the sum of
    the other members, built out (to rounding)."""
    params = StoryParams()
    moment = datetime(2024, 11, 5, tzinfo=UTC)
    vectors = [{"a": 0.8, "b": 0.6}, {"a": 0.6, "c": 0.8}, {"b": 0.28, "c": 0.96}, {"d": 1.0}]
    members = _Members()
    placed = [Placed(i, 1, moment, vector, None) for i, vector in enumerate(vectors)]
    for article in placed:
        members.add(article)
    for article in placed:
        rest: Counter[str] = Counter()
        for other in placed:
            if other is not article:
                rest.update(other.vector)
        expected = _mixed_score(article.vector, rest, _norm(rest), len(placed) - 1, params)
        square = sum(v * v for v in article.vector.values())
        assert abs(members.score_without(article, square, params) - expected) < 1e-12
    assert members.score_without(placed[3], 1.0, params) == 0.0  # shares nothing with the others


def test_story_terms_are_updated_in_place(tmp_path: Path, database_url: str) -> None:
    """Saving a story again rewrites only the index rows that changed: an unchanged row keeps its version (no
    dead row left behind for every lookup to step over), a term that left the story's heaviest is deleted,
    one that came in is added."""
    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    import_file(_archive(tmp_path, 40), Ingestor(storage))
    params = StoryParams()
    postgres = storage.engine.dialect.name == "postgresql"
    version = "xmin::text" if postgres else "rowid || ':' || weight"  # PostgreSQL: the transaction that wrote it
    versions = text(f"SELECT story_id, term, {version} FROM story_terms ORDER BY 1, 2")
    with storage.engine.connect() as db:
        before = db.execute(versions).all()
        first, second = db.execute(text("SELECT id FROM stories WHERE article_count > 0 ORDER BY id LIMIT 2")).scalars()
    with storage.repository() as repo:
        repo.save_stories([repo.story_state(first), repo.story_state(second)], params)
    with storage.engine.connect() as db:
        assert db.execute(versions).all() == before
    with storage.repository() as repo:
        state = repo.story_state(second)
        ranked = sorted(state.centroid.items(), key=lambda kv: (-kv[1], kv[0]))
        (gone, _), (kept, weight), (entered, _) = ranked[0], ranked[1], ranked[params.index_terms]
        state.centroid = {t: w for t, w in state.centroid.items() if t != gone} | {kept: weight * 2}
        repo.save_stories([state], params)
        expected = dict(state.index_terms(params))
    with storage.engine.connect() as db:
        after = db.execute(versions).all()
        index = dict(db.execute(text("SELECT term, weight FROM story_terms WHERE story_id = :s"), {"s": second}).all())
    storage.engine.dispose()
    assert index == expected and len(index) == params.index_terms
    assert gone not in index and entered in index and index[kept] == weight * 2
    rewritten = set(after) ^ set(before)  # rows deleted, added, or given a new version
    assert {(s, t) for s, t, _ in rewritten} == {(second, gone), (second, entered), (second, kept)}


def test_a_regrouping_is_applied_in_independent_parts() -> None:
    """Articles moving between the same stories are one part, applied in one short transaction; moves
    elsewhere are other parts, each checked against its own stories only."""
    from monitor.grouping import Change, parts

    change = Change(
        moves={10: (2, 0.2), 11: (2, 0.3), 20: (4, 0.2), 30: (-1, None), 31: (-1, 0.5)},
        absorbed={3: (4, 0.2)},
        split={-1: 5},
    )
    origin = {10: 1, 11: 1, 20: 3, 30: 5, 31: 5}
    found = parts(change, origin)
    assert [stories for stories, _ in found] == [frozenset({-1, 5}), frozenset({1, 2}), frozenset({3, 4})]
    assert found[0][1] == Change(moves={30: (-1, None), 31: (-1, 0.5)}, split={-1: 5})
    assert found[1][1] == Change(moves={10: (2, 0.2), 11: (2, 0.3)})
    assert found[2][1] == Change(moves={20: (4, 0.2)}, absorbed={3: (4, 0.2)})


def test_a_regrouping_summarises_its_stories_as_the_database_will_hold_them(tmp_path: Path, database_url: str) -> None:
    """Applying a regrouping summarises the changed stories from their members read before the lock, with
    the moves made in memory: the same members and vectors as reading them after the moves. An original
    moved takes its reprint (and the reprint of that) along; a story absorbed passes on what it still holds."""
    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    archive = _archive(tmp_path, 60)
    rows = archive.read_text(encoding="utf-8").splitlines()
    again = json.loads(rows[5])  # the reprint of the first article, reprinted in turn
    rows.insert(6, json.dumps({**again, "url": "https://reprise.example.fr/b", "source": "reprise bis"}))
    archive.write_text("\n".join(rows) + "\n", encoding="utf-8")
    import_file(archive, Ingestor(storage))
    with storage.repository() as repo:
        listed = [s for s in repo.members_of(range(1, 200)).items() if s[1].members]
    home, held = next((story, held) for story, held in listed if held.reprinted)
    original = min(set(held.reprinted.values()) - set(held.reprinted))
    into, absorbed = [story for story, _ in listed if story != home][:2]
    assert len(held.members) >= 3
    moves = {original: (into, 0.5)}
    merges = [(absorbed, into, 0.4)]
    changed = {home, into}
    with storage.repository() as repo:
        before = repo.members_of(sorted({home, into, absorbed}))
        expected = _moved(before, moves, merges, changed)
        repo.move_articles(moves)
        repo.empty_stories(merges)
        after = repo.members_of(sorted(changed))
    assert {s: (h.members, h.vectors, h.title) for s, h in expected.items()} == {
        s: (h.members, h.vectors, h.title) for s, h in after.items()
    }
    moved = {m.article_id for m in after[into].members} - {m.article_id for m in before[into].members}
    assert original in moved and len(moved & set(held.reprinted)) >= 2  # the reprint and its reprint followed
