"""The JSON API (/api/...): the same read model as the pages, field names as in the SQL schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from monitor.desk.params import INT_MAX
from monitor.desk.read import Desk
from monitor.desk.rows import FeedRow, ItemRow, Page, SearchHit, StoryDetail, StoryRow, plain
from monitor.web import params
from monitor.web.app import field_error, now

router = APIRouter(prefix="/api", tags=["api"])

Since = Annotated[str | None, Query(description="Start of the period: ISO 8601 time or date, or relative (6h, 2d).")]
Until = Annotated[str | None, Query(description="End of the period (exclusive): ISO 8601 time or date, or relative.")]
Q = Annotated[str | None, Query(description='Watch query: words and "quoted phrases", all required.')]
Offset = Annotated[int, Query(ge=0, le=INT_MAX, description="Rows to skip (pagination; the answer's next_offset).")]
Limit = Annotated[int, Query(ge=1, le=200)]
MinOutlets = Annotated[int, Query(ge=1, le=INT_MAX, description="Only stories covered by at least this many outlets.")]


def _desk(request: Request) -> Desk:
    desk: Desk = request.app.state.desk
    return desk


def _json(value: Any) -> JSONResponse:
    return JSONResponse(plain(value))


@router.get("/stories", response_model=Page[StoryRow])
def stories(
    request: Request,
    since: Since = None,
    until: Until = None,
    q: Q = None,
    outlet: str | None = None,
    tag: Annotated[str | None, Query(description="Feed tag (feeds.yaml).")] = None,
    min_outlets: MinOutlets = 1,
    offset: Offset = 0,
    limit: Limit = 20,
) -> JSONResponse:
    """Stories ranked as in digests: by distinct outlets, then most recent coverage."""
    desk, moment = _desk(request), now()
    where = params.story_filter(
        since=params.moment("since", since, moment, desk.timezone),
        until=params.moment("until", until, moment, desk.timezone, end_of_day=True),
        q=params.query("q", q),
        outlet=outlet,
        tag=tag,
        min_outlets=min_outlets,
    )
    return _json(desk.stories(where, offset=offset, limit=limit))


@router.get("/stories/{story_id}", response_model=StoryDetail)
def story(request: Request, story_id: params.Id) -> JSONResponse:
    """One story with every article, how each was placed, and the stories merged into it."""
    detail = _desk(request).story(story_id)
    if detail is None:
        raise HTTPException(404, f"no story {story_id}")
    return _json(detail)


@router.get("/search", response_model=Page[SearchHit])
def search(
    request: Request,
    q: Annotated[str, Query(description='Words and "quoted phrases", all required.')],
    since: Since = None,
    until: Until = None,
    offset: Offset = 0,
    limit: Limit = 20,
) -> JSONResponse:
    """Stories whose coverage matches; ``total`` is the true count, each hit has a marked snippet."""
    desk, moment = _desk(request), now()
    parsed = params.query("q", q)
    if parsed is None:
        raise field_error("q", "must not be empty")
    where = params.story_filter(
        since=params.moment("since", since, moment, desk.timezone),
        until=params.moment("until", until, moment, desk.timezone, end_of_day=True),
        q=None,
        outlet=None,
        tag=None,
        min_outlets=1,
    )
    return _json(desk.search(parsed, where, offset=offset, limit=limit))


@router.get("/feeds", response_model=list[FeedRow])
def feeds(request: Request) -> JSONResponse:
    """Every feed's health, worst first, with its pending and failed item counts."""
    return _json(_desk(request).feeds())


@router.get("/feeds/{feed_id}/items", response_model=Page[ItemRow])
def items(
    request: Request,
    feed_id: params.Id,
    state: Annotated[str, Query(pattern="^(pending|done|failed)$")] = "failed",
    limit: Limit = 200,
) -> JSONResponse:
    """A feed's items in one state (failed ones with the reason)."""
    desk = _desk(request)
    if desk.feed(feed_id) is None:
        raise HTTPException(404, f"no feed {feed_id}")
    return _json(desk.items(states=(state,), feed=feed_id, limit=limit))


@router.get("/digests")
def digests(request: Request) -> JSONResponse:
    """The digests configured in feeds.yaml, the latest runs (digest_runs), and what each digest's next run
    would carry if it were sent now (``next``: its period and stories so far)."""
    desk, moment = _desk(request), now()
    configured, error = params.configured_digests(request.app.state.settings.feeds_file)
    upcoming = []
    for config in configured:
        digest = desk.next_digest(config, moment)
        if digest is not None:
            upcoming.append(
                {
                    "digest": config.name,
                    "period_start": digest.start,
                    "period_end": digest.end,
                    "stories": digest.stories,
                }
            )
    return _json({"digests": configured, "config_error": error, "runs": desk.digest_runs(), "next": upcoming})
