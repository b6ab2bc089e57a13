"""Live grouping that does not depend on arrival order: a neighbourhood of stories is grouped again from
its articles, in publication order, exactly as a batch import would group them (greedy placement, then
``merge_plan`` and ``refine_plan``), and the result is mapped back onto the stories that exist, so that a
story keeps its id when it keeps most of its articles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from monitor.grouping.features import _norm
from monitor.grouping.merging import Placed, merge_plan, publication_order, refine_plan
from monitor.grouping.params import StoryParams
from monitor.grouping.scoring import _mixed_score
from monitor.grouping.state import Candidate, Member, StoryState


@dataclass(frozen=True)
class Change:
    """What regrouping does to the stories it looked at. New stories are named by negative numbers until
    the caller creates them; ``moves`` lists every article whose story changes, with its score there
    (None when it is alone), ``absorbed`` every story left empty, with the story that took most of it, and
    ``split`` every new story, with the story most of its articles came from."""

    moves: dict[int, tuple[int, float | None]] = field(default_factory=dict)
    absorbed: dict[int, tuple[int, float]] = field(default_factory=dict)
    split: dict[int, int] = field(default_factory=dict)


def regroup(placed: Sequence[Placed], params: StoryParams) -> Change:
    """Group these articles again as a batch would, whatever order they arrived in, and say what changes."""
    clusters = _cluster(placed, params)
    return _identities(placed, clusters, params)


def _cluster(placed: Sequence[Placed], params: StoryParams) -> list[list[Placed]]:
    """Greedy placement in publication order, then average-link merging and refinement, as on import."""
    states: list[StoryState] = []
    norms: list[float] = []
    home: dict[int, int] = {}
    span = timedelta(days=params.max_span_days)
    for article in sorted(placed, key=publication_order):
        norm = _norm(article.vector)
        best: tuple[float, int] | None = None
        for index, state in enumerate(states):
            moment = article.published_at
            if max(state.last_published_at, moment) - min(state.first_published_at, moment) > span:
                continue
            score = _mixed_score(article.vector, state.centroid, norms[index], state.originals, params, norm)
            event = state.event_date
            if article.event_date and event and abs((article.event_date - event).days) > params.date_gap_days:
                score *= params.date_penalty  # as in best_story
            if score >= params.threshold and (best is None or score > best[0]):
                best = (score, index)
        if best is None:
            states.append(StoryState(len(states), "", {}, []))
            norms.append(0.0)
            index = len(states) - 1
        else:
            index = best[1]
        member = Member(article.article_id, article.published_at, "", "", article.event_date, False)
        states[index].add(member, article.vector, params)
        norms[index] = _norm(states[index].centroid)
        home[article.article_id] = index
    summaries = [
        Candidate(i, s.centroid, s.first_published_at, s.last_published_at, s.event_date, s.originals)
        for i, s in enumerate(states)
    ]
    merged = merge_plan(summaries, params)
    local = [replace(a, story_id=merged.get(home[a.article_id], (home[a.article_id], 0.0))[0]) for a in placed]
    moves = refine_plan(local, params)
    groups: dict[int, list[Placed]] = {}
    for article, mine in zip(placed, local, strict=True):
        groups.setdefault(moves.get(article.article_id, (mine.story_id, 0.0))[0], []).append(article)
    return sorted((sorted(g, key=publication_order) for g in groups.values()), key=lambda g: publication_order(g[0]))


def _identities(placed: Sequence[Placed], clusters: list[list[Placed]], params: StoryParams) -> Change:
    """Name each new group after the existing story it shares most articles with (each story names one
    group at most; ties: the older story), or as a new story; say which articles change story."""
    overlap = Counter((index, a.story_id) for index, group in enumerate(clusters) for a in group)
    names: dict[int, int] = {}
    taken: set[int] = set()
    for (index, story), _count in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0])):
        if index not in names and story not in taken:
            names[index] = story
            taken.add(story)
    change = Change()
    fresh = 0
    for index, group in enumerate(clusters):
        if index not in names:
            fresh -= 1
            names[index] = fresh
            change.split[fresh] = Counter(a.story_id for a in group).most_common(1)[0][0]
        total: Counter[str] = Counter()
        for article in group:
            total.update(article.vector)
        for article in group:
            if article.story_id != names[index]:
                change.moves[article.article_id] = (names[index], _score_within(article, total, len(group), params))
    given: dict[int, Counter[int]] = {}
    for article in placed:
        if article.article_id in change.moves:
            given.setdefault(article.story_id, Counter())[change.moves[article.article_id][0]] += 1
    for story in sorted(set(a.story_id for a in placed) - taken):
        into = min(given[story], key=lambda target: (-given[story][target], target))
        scores = [s for aid, (target, s) in change.moves.items() if target == into and s is not None]
        change.absorbed[story] = (into, round(max(scores), 4) if scores else 0.0)
    return change


def parts(change: Change, origin: Mapping[int, int]) -> list[tuple[frozenset[int], Change]]:
    """The change cut into independent parts, each with the stories it touches: articles moving between
    the same stories belong together, unrelated moves do not. Each part can be applied on its own, in a
    short transaction, if its own stories are unchanged. ``origin``: the story each moved article is in."""
    parent: dict[int, int] = {}

    def find(story: int) -> int:
        while parent.setdefault(story, story) != story:
            story = parent[story]
        return story

    def join(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    for article, (target, _) in change.moves.items():
        join(origin[article], target)
    for story, (into, _) in change.absorbed.items():
        join(story, into)
    for fresh, source in change.split.items():
        join(fresh, source)
    groups: dict[int, set[int]] = {}
    for story in list(parent):
        groups.setdefault(find(story), set()).add(story)
    found = []
    for stories in sorted(groups.values(), key=min):
        found.append(
            (
                frozenset(stories),
                Change(
                    {a: m for a, m in change.moves.items() if m[0] in stories},
                    {s: m for s, m in change.absorbed.items() if s in stories},
                    {f: o for f, o in change.split.items() if f in stories},
                ),
            )
        )
    return found


def _score_within(article: Placed, total: Counter[str], count: int, params: StoryParams) -> float | None:
    """The placement score of an article against the other members of its group (None: it is alone)."""
    if count <= 1:
        return None
    rest = Counter(total)
    rest.subtract(article.vector)
    kept = {t: v for t, v in rest.items() if abs(v) > 1e-9}
    return round(_mixed_score(article.vector, kept, _norm(kept), count - 1, params), 4) if kept else 0.0
