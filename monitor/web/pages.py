"""The HTML pages: server-rendered Jinja2 (autoescaped), French labels, times on the analyst's clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from monitor.desk.params import INT_MAX, StoryFilter
from monitor.desk.read import Desk
from monitor.desk.rows import Page
from monitor.desk.times import duration, local, relative
from monitor.web import params
from monitor.web.app import HERE, now

PAGE_SIZE = 20
PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
METHODS = {
    "new_story": "a ouvert le sujet",
    "story_match": "rapproché du sujet",
    "near_copy": "quasi-copie",
    "moved": "déplacé ici par l'affinage",
}
FEED_STATES = {"ok": "en service", "failing": "en échec", "disabled": "désactivé"}
RUN_STATES = {
    "pending": "en attente",
    "sending": "en cours d'envoi",
    "sent": "envoyée",
    "empty": "vide",
    "failed": "échec",
}
ITEM_STATES = {"pending": "en attente", "failed": "en échec", "done": "traités"}


def _plural(count: int, singular: str, many: str | None = None) -> str:
    """French counts: 0 takes the singular too ("0 sujet", "1 sujet", "2 sujets")."""
    return f"{count} {singular if count < 2 else (many or singular + 's')}"


def _number(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}".replace(".", ",")


_env = Environment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(number=_number, duration=duration)
_env.globals.update(
    plural=_plural, METHODS=METHODS, FEED_STATES=FEED_STATES, RUN_STATES=RUN_STATES, ITEM_STATES=ITEM_STATES
)
templates = Jinja2Templates(env=_env)
router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    desk: Desk = request.app.state.desk
    moment = now()
    zone = desk.timezone
    helpers = {
        "zone": zone,
        "now": moment,
        "local": lambda t: local(t, zone),
        "ago": lambda t: relative(t, moment),
        "iso": lambda t: t.isoformat() if t else "",
    }
    return templates.TemplateResponse(request, name, {**helpers, **context}, status_code=status)


def _pages(request: Request, page: Page[Any]) -> dict[str, str | None]:
    """Links to the previous and next pages, keeping every other parameter."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "offset" and v]

    def link(to: int) -> str:
        return "?" + urlencode([*kept, ("offset", str(to))] if to else kept)

    return {
        "previous": link(max(0, page.offset - page.limit)) if page.offset > 0 else None,
        "next": link(page.next_offset) if page.next_offset is not None else None,
    }


@router.get("/")
def stories(
    request: Request,
    period: Annotated[str | None, Query(pattern="^(|24h|7d)$")] = None,
    since: Annotated[str | None, Query(alias="from")] = None,
    until: Annotated[str | None, Query(alias="to")] = None,
    q: str | None = None,
    outlet: str | None = None,
    tag: str | None = None,
    min_outlets: Annotated[int, Query(ge=1, le=INT_MAX)] = 1,
    offset: Annotated[int, Query(ge=0, le=INT_MAX)] = 0,
) -> Response:
    desk, moment = request.app.state.desk, now()
    start = params.moment("from", since, moment, desk.timezone)
    if start is None and period:
        start = moment - PERIODS[period]
    where: StoryFilter = params.story_filter(
        since=start,
        until=params.moment("to", until, moment, desk.timezone, end_of_day=True),
        q=params.query("q", q),
        outlet=outlet,
        tag=tag,
        min_outlets=min_outlets,
        until_name="to",
    )
    page = desk.stories(where, offset=offset, limit=PAGE_SIZE)
    form: dict[str, str | int] = {"period": period or "", "from": since or "", "to": until or "", "q": q or ""}
    form |= {"outlet": outlet or "", "tag": tag or "", "min_outlets": min_outlets}
    return _page(
        request,
        "stories.html.j2",
        {
            "page": page,
            "form": form,
            "outlets": desk.outlets(),
            "tags": desk.tags(),
            "filtered": where != StoryFilter(),
            **_pages(request, page),
        },
    )


@router.get("/stories/{story_id}")
def story(request: Request, story_id: params.Id) -> Response:
    detail = request.app.state.desk.story(story_id)
    if detail is None:
        raise HTTPException(404, f"Aucun sujet n° {story_id}.")
    return _page(request, "story.html.j2", {"story": detail})


@router.get("/search")
def search(request: Request, q: str = "", offset: Annotated[int, Query(ge=0, le=INT_MAX)] = 0) -> Response:
    desk = request.app.state.desk
    parsed = params.query("q", q)
    page = desk.search(parsed, StoryFilter(), offset=offset, limit=PAGE_SIZE) if parsed else None
    pages = _pages(request, page) if page else {}
    return _page(request, "search.html.j2", {"q": q, "page": page, **pages})


@router.get("/feeds")
def feeds(request: Request) -> Response:
    return _page(request, "feeds.html.j2", {"feeds": request.app.state.desk.feeds()})


@router.get("/feeds/{feed_id}/items")
def items(
    request: Request, feed_id: params.Id, state: Annotated[str, Query(pattern="^(pending|done|failed)$")] = "failed"
) -> Response:
    desk = request.app.state.desk
    feed = desk.feed(feed_id)
    if feed is None:
        raise HTTPException(404, f"Aucun flux n° {feed_id}.")
    return _page(
        request, "items.html.j2", {"feed": feed, "state": state, "items": desk.items(states=(state,), feed=feed_id)}
    )


@router.get("/digests")
def digests(request: Request) -> Response:
    desk: Desk = request.app.state.desk
    configured, error = params.configured_digests(request.app.state.settings.feeds_file)
    moment = now()
    upcoming = {d.name: desk.next_digest(d, moment) for d in configured}
    context = {"digests": configured, "config_error": error, "runs": desk.digest_runs(), "upcoming": upcoming}
    return _page(request, "digests.html.j2", context)
