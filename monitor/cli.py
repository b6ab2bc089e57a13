"""The `monitor` command."""

# ruff: noqa: E402  (the Ctrl-C guard below must be in place before the slow imports)
from __future__ import annotations

import signal
import sys
from types import FrameType


def _interrupted_while_loading(_signum: int, _frame: FrameType | None) -> None:
    """Ctrl-C during the second the imports take: the one line main() prints, not a traceback."""
    sys.stderr.write("monitor: interrupted\n")
    raise SystemExit(130)


_GUARDED = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not when started with SIGINT ignored
if _GUARDED:
    signal.signal(signal.SIGINT, _interrupted_while_loading)

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from monitor.config import Settings
from monitor.desk.rows import plural
from monitor.errors import ConfigError, MonitorError
from monitor.ops.logs import configure_logging

if TYPE_CHECKING:
    from monitor.desk.read import Desk
    from monitor.desk.rows import ArticleRow, Page, StoryEventRow, StoryRow
    from monitor.search import Query

if _GUARDED:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, main() reports it

app = typer.Typer(
    help="Media monitoring: French tech-news feeds in, stories out, stored in SQL.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
app.add_typer(db_app, name="db")
feeds_app = typer.Typer(help="Feed health, and feed lists in and out (OPML).", invoke_without_command=True)
app.add_typer(feeds_app, name="feeds")
# Titles, sources, URLs and reasons come from the web: no rich markup or :emoji: codes, so they print verbatim.
console = Console(soft_wrap=True, markup=False, emoji=False)
errors = Console(stderr=True, soft_wrap=True, markup=False, emoji=False)


def _show_version(value: bool) -> None:
    if value:
        from monitor import __version__

        console.print(f"monitor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Show the version and exit.", is_eager=True, callback=_show_version)
    ] = False,
) -> None:
    """Media monitoring: French tech-news feeds in, stories out, stored in SQL."""


def _settings() -> Settings:
    """The environment's settings; the first bad one stops the command in one line naming its variable."""
    try:
        settings = Settings()
    except ValidationError as e:
        first = e.errors()[0]
        variable = f"MONITOR_{str(first['loc'][0]).upper()}" if first["loc"] else "MONITOR_*"
        reason = str(first["msg"]).removeprefix("Value error, ").removeprefix(f"{variable}: ")
        raise ConfigError(f"{variable}: {reason}") from e
    configure_logging(settings.log_level, settings.log_format)
    return settings


@app.command()
def run(
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="Fetch every feed once, ingest and regroup, run the regrouping safety net if due, and exit."
        ),
    ] = False,
) -> None:
    """Run the daemon: poll due feeds and ingest new articles until SIGTERM/SIGINT."""
    settings = _settings()  # a bad setting is refused before the daemon's imports (about a second)
    from monitor.daemon.report import placed
    from monitor.daemon.service import run_forever, run_once

    if not once:
        asyncio.run(run_forever(settings))
        return
    report = asyncio.run(run_once(settings))
    from monitor.desk.read import Desk

    with Desk(settings.database_url, timezone=settings.timezone) as desk:
        pending = desk.pending_items()
    console.print(
        f"{plural(report.feeds_ok, 'feed')} fetched, {report.feeds_failed} failed; "
        f"{plural(report.items_new, 'new item')}, {placed(report)}, "
        f"{plural(report.items_failed, 'item')} failed, {pending} left pending; "
        f"{plural(report.stories_merged, 'story', 'stories')} merged"
    )
    for line in report.errors[:50]:
        errors.print(f"  {line}", highlight=False)
    if report.feeds_ok == 0 and report.feeds_failed > 0:
        raise typer.Exit(1)


@app.command("import")
def import_(
    path: Annotated[
        str,  # not Path: typer only recognises "-" in a string
        typer.Argument(
            help="JSONL file (- for standard input): url, title, text or html, published_at, source.",
            exists=True,
            dir_okay=False,
            allow_dash=True,
        ),
    ],
) -> None:
    """Backfill articles from a JSONL archive, through the same pipeline as fetched ones."""
    from monitor.pipeline.importing import count_lines, import_file
    from monitor.pipeline.placement import Ingestor
    from monitor.storage import Storage

    settings = _settings()
    stdin = path == "-"
    name = "stdin" if stdin else path
    with Storage(settings.database_url) as storage:
        storage.ensure_schema(upgrade=settings.auto_upgrade)
        ingestor = Ingestor(storage, settings.story_params())
        try:
            total = None if stdin else count_lines(Path(path))
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from e
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=errors,
            disable=not errors.is_terminal,
        ) as bar:
            task = bar.add_task("import", total=total)
            report = import_file(
                sys.stdin.buffer if stdin else Path(path),
                ingestor,
                progress=lambda n: bar.update(task, completed=n),
                max_line_bytes=settings.import_max_line_bytes,
            )
    for error in sorted(report.errors, key=lambda e: e.line):  # a line refused on storing comes after its batch
        errors.print(f"{name}:{_one_line(error)}", highlight=False)
    if report.skipped > len(report.errors):
        errors.print(f"{name}: … and {plural(report.skipped - len(report.errors), 'more line')}", highlight=False)
    console.print(
        f"{plural(report.added, 'article')} added, {report.already_known} already known, "
        f"{plural(report.skipped, 'line')} skipped, {plural(report.merged, 'story', 'stories')} merged"
    )


def _desk(settings: Settings) -> Desk:
    """The read model, read-only; refuses an out-of-date schema (upgrading it would be a write)."""
    from monitor.desk.read import Desk

    desk = Desk(settings.database_url, timezone=settings.timezone)
    desk.check_schema()
    return desk


def _period(since: str | None, until: str | None, settings: Settings) -> tuple[datetime | None, datetime | None]:
    """--since and --until as times, both read against one clock; a period that ends before it starts is
    refused, as the desk refuses it, rather than shown as "0 stories match"."""
    from monitor.desk.params import parse_moment

    now = datetime.now(UTC)

    def moment(option: str, value: str | None, end_of_day: bool) -> datetime | None:
        try:
            return None if value is None else parse_moment(value, now, settings.timezone, end_of_day=end_of_day)
        except ValueError as e:
            raise ConfigError(f"{option}: {e}") from e

    start, end = moment("--since", since, False), moment("--until", until, True)
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"--until: {until!r} is not after --since {since!r}")
    return start, end


def _query(value: str, option: str) -> Query:
    from monitor.desk.params import check_query

    try:
        return check_query(value)
    except ValueError as e:
        raise ConfigError(f"{option}: {e}") from e


def _print_json(value: object) -> None:
    from monitor.desk.rows import to_json

    sys.stdout.write(to_json(value) + "\n")


def _matches(page: Page[Any], noun: tuple[str, str], what: str) -> str:
    """The true total, not the page: "1 story matches …", "12 stories match …; showing 5 (--limit)", and
    "more than 10000 stories match …" where counting stopped."""
    total, shown = page.total, len(page.items)
    if not page.total_exact:
        text = f"more than {total} {noun[1]} match{what}"
    else:
        text = f"{total} {noun[0]} matches{what}" if total == 1 else f"{total} {noun[1]} match{what}"
    return text + (f"; showing {shown} (--limit)" if shown < total else "")


Since = Annotated[str | None, typer.Option(help="Coverage since: 2d, 6h, 30m ago, or an ISO 8601 date or time.")]
Until = Annotated[str | None, typer.Option(help="Coverage before: 2d, 6h ago, or ISO 8601 (a date includes that day).")]


def _positive(param: typer.CallbackParam, value: int) -> int:
    """Counts and ids are SQL integers: one out of range is bad input in one line, not an overflow."""
    from monitor.desk.params import INT_MAX

    if not 1 <= value <= INT_MAX:
        name = param.opts[0] if param.param_type_name == "option" else param.opts[0].upper()
        raise ConfigError(f"{name}: {value} is not between 1 and {INT_MAX}")
    return value


Limit = Annotated[int, typer.Option(callback=_positive, help="How many to show (at least 1).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (field names as in the SQL schema).")]


@app.command()
def stories(
    limit: Limit = 20,
    since: Since = None,
    until: Until = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help='Watch query: words and "phrases".')] = None,
    outlet: Annotated[str | None, typer.Option(help="Only stories this outlet covered.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only stories with an article from a feed with this tag.")] = None,
    min_outlets: Annotated[
        int, typer.Option(callback=_positive, help="Only stories covered by this many outlets.")
    ] = 1,
    as_json: AsJson = False,
) -> None:
    """Show stories ranked as in digests (distinct outlets, then recency), with article counts and outlets."""
    from monitor.desk.params import StoryFilter
    from monitor.desk.times import local

    settings = _settings()
    where = StoryFilter(
        *_period(since, until, settings),
        _query(query, "--query") if query else None,
        outlet,
        tag,
        min_outlets,
    )
    with _desk(settings) as desk:
        page = desk.stories(where, limit=limit)
    if as_json:
        _print_json(page)
        return
    table = Table("story", _published_column(settings.timezone), "articles", "outlets", "title")
    for row in page.items:
        table.add_row(
            str(row.id),
            local(row.last_published_at, settings.timezone),
            str(row.article_count),
            _outlets(row),
            row.title,
        )
    if page.items:
        console.print(table)
    console.print(_matches(page, ("story", "stories"), ""), highlight=False)


def _published_column(timezone: str) -> Column:
    """The time zone under the heading, and the times unbroken: the column as wide as a time, not as the
    heading, leaves the width to the titles."""
    return Column(f"last published\n({timezone})", no_wrap=True)


def _outlets(row: StoryRow) -> str:
    """The count and the first two outlets, "12: 01net, Clubic +10": a story keeps to two or three lines in
    80 columns (--json has them all)."""
    more = f" +{len(row.outlets) - 2}" if len(row.outlets) > 2 else ""
    return f"{row.outlet_count}: {', '.join(row.outlets[:2])}{more}"


@app.command()
def story(
    story_id: Annotated[int, typer.Argument(callback=_positive, help="A story's id (monitor stories).")],
    as_json: AsJson = False,
) -> None:
    """Show one story: its coverage in time order, why each article is there, and its history.

    Near-copies are listed under their original; the history is the story's moves, splits and merges."""
    from monitor.desk.times import local

    settings = _settings()
    with _desk(settings) as desk:
        detail = desk.story(story_id)
    if detail is None:
        raise ConfigError(f"no story {story_id}")
    if as_json:
        _print_json(detail)
        return
    zone = settings.timezone
    out = [f"story {detail.id}: {detail.title}"]
    out.append(
        f"{detail.outlet_count} outlet{'s' if detail.outlet_count != 1 else ''}, "
        f"{detail.article_count} article{'s' if detail.article_count != 1 else ''}, "
        f"{local(detail.first_published_at, zone)} → {local(detail.last_published_at, zone)} ({zone})"
    )
    if detail.merged_into_id:
        out.append(f"merged into story {detail.merged_into_id} (score {detail.merge_score:.2f})")
    if detail.lead:
        out += ["", detail.lead]
    out += ["", "coverage:"]
    for item in detail.coverage():
        a = item.article
        out += [
            f"  {local(a.published_at, zone)}  {a.source} [{a.id}]: {a.title}",
            f"      {a.url}",
            f"      why: {_why(a)}",
        ]
        for copy in item.copies:
            out += [f"      ↳ copied by {copy.source} [{copy.id}] {local(copy.published_at, zone)}: {copy.url}"]
            out += [f"        why: {_why(copy)}"]
    for merged in detail.merged_from:
        score = f"{merged.merge_score:.2f}" if merged.merge_score is not None else "?"
        out.append(f"merged here: story {merged.id} {merged.title!r} (score {score}, {local(merged.updated_at, zone)})")
    for mention in detail.digests:
        out.append(f"in digest {mention.digest!r} of {local(mention.period_end, zone)}, at position {mention.rank}")
    if detail.history:
        out += ["", "history (newest first):"]
        out += [f"  {local(e.at, zone)}  {_event(e)}" for e in detail.history]
    console.print("\n".join(out), highlight=False)


def _event(event: StoryEventRow) -> str:
    """A story_events row in words, seen from the story shown."""
    other = f"story {event.counterpart_id}" if event.counterpart_id is not None else "a deleted story"
    article = f"article {event.article_id}"
    said = {
        ("moved", True): f"{article} moved in from {other}",
        ("moved", False): f"{article} moved out to {other}",
        ("split", True): f"split off from {other}",
        ("split", False): f"{other} split off from it",
        ("merged", True): f"{other} merged into it",
        ("merged", False): f"merged into {other}",
    }.get((event.kind, event.incoming), event.kind)
    score = f" (score {event.score:.2f})" if event.score is not None else ""
    return f"{said}{score}: {event.reason}"


def _why(article: ArticleRow) -> str:
    """How the article was placed, in words: its method, score, and what it matched."""
    score = f" (score {article.placement_score:.2f})" if article.placement_score is not None else ""
    if article.placement_method == "near_copy":
        similarity = (
            f" (similarity {article.duplicate_similarity:.2f})" if article.duplicate_similarity is not None else ""
        )
        return f"near-copy of article {article.duplicate_of_id}{similarity}"
    if article.placement_method == "story_match":
        closest = f", closest to article {article.matched_article_id}" if article.matched_article_id else ""
        matched = "this story" if article.matched_story_id == article.story_id else f"story {article.matched_story_id}"
        return f"matched {matched}{score}{closest}"
    if article.placement_method == "new_story":
        return "founded the story"
    if article.placement_method == "moved":
        return f"moved here by refinement{score}"
    return article.placement_method


@app.command()
def items(
    pending: Annotated[bool, typer.Option("--pending", help="Only items still waiting to be fetched.")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only items given up, with the reason.")] = False,
    feed: Annotated[str | None, typer.Option(help="Only this feed's items (its name).")] = None,
    limit: Limit = 200,
    as_json: AsJson = False,
) -> None:
    """List stuck work: feed items pending or failed, with attempts and the reason."""
    from monitor.desk.times import local, relative

    settings = _settings()
    states = [s for s, wanted in (("pending", pending), ("failed", failed)) if wanted] or ["pending", "failed"]
    with _desk(settings) as desk:
        page = desk.items(states=states, feed=feed, limit=limit)
    if as_json:
        _print_json(page)
        return
    now = datetime.now(UTC)
    table = Table("feed", "state", "tries", f"seen ({settings.timezone})", "next try", "url", "reason")
    for item in page.items:
        next_try = relative(item.next_attempt_at, now, french=False) if item.state == "pending" else ""
        table.add_row(
            item.feed,
            item.state,
            str(item.attempts),
            local(item.seen_at, settings.timezone),
            next_try,
            item.url or item.guid,
            item.last_error or "",
        )
    if page.items:  # nothing stuck: the count alone says it
        console.print(table)
    shown = f"; showing {len(page.items)} (--limit)" if len(page.items) < page.total else ""
    noun = "item" if page.total == 1 else "items"
    console.print(f"{page.total} {noun} {' or '.join(states)}{shown}", highlight=False)


@feeds_app.callback()
def feeds(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Show every feed's health: state, last success, next fetch and why then, pending and failed items."""
    if ctx.invoked_subcommand is not None:
        return
    from monitor.desk.times import duration, local, relative

    settings = _settings()
    with _desk(settings) as desk:
        rows = desk.feeds()
    if as_json:
        _print_json(rows)
        return
    if not rows:  # an import adds articles, not feeds
        hint = f"no feed in the database yet: `monitor run` adds those of {settings.feeds_file}"
        console.print(hint, highlight=False)
        return
    now, zone = datetime.now(UTC), settings.timezone
    table = Table(
        "feed", "state", f"last success ({zone})", "next fetch", "why then", "pending", "failed", "last error"
    )
    for f in rows:
        every = f"every {duration(f.interval_s, french=False)}"
        asked = duration(f.next_fetch_delay_s or 0, french=False)  # null: not fetched since migration 0014
        failures = plural(f.consecutive_failures, "failure")
        when = (
            {
                "interval": every,
                "adaptive": f"adaptive interval {asked} (configured {every}: the feed publishes rarely)",
                "cache_control": f"the server's Cache-Control max-age {asked} (configured {every})",
                "ttl": f"the feed's RSS ttl {asked} (configured {every})",
                "backoff": f"backoff {asked} after {failures}" if f.next_fetch_delay_s else f"backoff after {failures}",
                "retry_after": f"the server's Retry-After {asked} (after {failures})",
            }[f.next_fetch_reason]
            if f.enabled
            else f"disabled: {f.disabled_reason or ''}"
        )
        last = (
            f"{local(f.last_success_at, zone)} ({relative(f.last_success_at, now, french=False)})"
            if f.last_success_at
            else "never"
        )
        upcoming = (
            f"{local(f.next_fetch_at, zone)} ({relative(f.next_fetch_at, now, french=False)})" if f.enabled else "—"
        )
        table.add_row(
            f.name,
            f.state,
            last,
            upcoming,
            when,
            str(f.pending_items),
            str(f.failed_items),
            f"{f.last_error_kind}: {f.last_error}" if f.last_error else "",
        )
    console.print(table)


@feeds_app.command("import-opml")
def feeds_import_opml(
    path: Annotated[
        Path, typer.Argument(help="An OPML file (exported by a feed reader).", exists=True, dir_okay=False)
    ],
    append: Annotated[bool, typer.Option("--append", help="Append the new feeds to MONITOR_FEEDS_FILE.")] = False,
) -> None:
    """Turn an OPML file's feeds into feeds.yaml entries: printed, or appended (checked before writing)."""
    from monitor.opml import append_feeds, entries_yaml, read_opml

    entries, skipped = read_opml(path)
    for line in skipped:
        errors.print(f"{path}: skipped {line}", highlight=False)
    if not append:
        sys.stdout.write(entries_yaml(entries))
        return
    settings = _settings()
    added, known = append_feeds(settings.feeds_file, entries)
    console.print(
        f"{plural(added, 'feed')} added to {settings.feeds_file}, {known} already there, {len(skipped)} skipped"
    )


@feeds_app.command("export-opml")
def feeds_export_opml() -> None:
    """Print the feeds of MONITOR_FEEDS_FILE as OPML 2.0, tags as categories."""
    from monitor.config import load_feeds
    from monitor.opml import write_opml

    settings = _settings()
    sys.stdout.write(write_opml(load_feeds(settings.feeds_file, settings.default_interval)))


@app.command()
def search(
    query: Annotated[
        str, typer.Argument(help='Words and "quoted phrases"; all must match (accents and endings do not matter).')
    ],
    limit: Limit = 20,
    since: Since = None,
    until: Until = None,
    as_json: AsJson = False,
) -> None:
    """Show the stories whose coverage matches a watch query (French full-text search), with a snippet."""
    from monitor.desk.params import StoryFilter
    from monitor.desk.times import local

    settings = _settings()
    parsed = _query(query, "query")
    where = StoryFilter(*_period(since, until, settings))
    with _desk(settings) as desk:
        page = desk.search(parsed, where, limit=limit)
    if as_json:
        _print_json(page)
        return
    # A block per story, as `story` prints one: a snippet in a table cell ran to twenty lines in 80 columns.
    out = []
    for hit in page.items:
        row = hit.story
        out += [
            f"story {row.id}: {row.title}",
            f"  {plural(row.outlet_count, 'outlet')}, {plural(row.article_count, 'article')}, last published "
            f"{local(row.last_published_at, settings.timezone)} ({settings.timezone})",
            "  " + "".join(s.text.upper() if s.match else s.text for s in hit.snippet),  # the words found, in capitals
            "",
        ]
    out.append(_matches(page, ("story", "stories"), f" {parsed}"))
    console.print("\n".join(out), highlight=False)


@app.command()
def web(
    host: Annotated[str, typer.Option(help="Address to serve on; off loopback MONITOR_WEB_TOKEN is required.")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: MONITOR_WEB_PORT, else 8000).")
    ] = None,
) -> None:
    """Serve the analyst's desk: read-only pages (stories, search, feeds, digests) and the JSON API under /api/."""
    from monitor.web import check_bind, create_app
    from monitor.web.app import listen

    settings = _settings()
    check_bind(host, settings)  # before anything listens
    with _desk(settings) as desk:
        import uvicorn

        chosen = port or settings.web_port or 8000
        sock = listen(host, chosen)
        shown = f"[{host}]" if ":" in host else host
        console.print(f"monitor web: http://{shown}:{chosen}/ (read-only; Ctrl-C stops)", highlight=False)
        server = uvicorn.Server(uvicorn.Config(create_app(settings, desk), log_level="warning", server_header=False))
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has already stopped in order
            server.run(sockets=[sock])


@app.command()
def digest(
    name: Annotated[str, typer.Argument(help="A digest named in the digests: section of feeds.yaml.")],
    preview: Annotated[Path | None, typer.Option(help="Write the HTML e-mail to this file; send nothing.")] = None,
    send: Annotated[bool, typer.Option("--send", help="Send it now for the period ending now.")] = False,
    at: Annotated[
        datetime | None, typer.Option(help="End the period at this ISO 8601 time instead of now (UTC if no offset).")
    ] = None,
) -> None:
    """Preview or send a digest e-mail now."""
    from monitor.config import load_digests
    from monitor.digests.build import build
    from monitor.digests.periods import period_end
    from monitor.digests.render import render
    from monitor.digests.runs import Digester
    from monitor.storage import Storage

    settings = _settings()
    digests = {d.name: d for d in load_digests(settings.feeds_file)}
    if name not in digests:
        raise ConfigError(f"no digest named {name!r} in {settings.feeds_file} (known: {', '.join(digests) or 'none'})")
    if not preview and not send:
        raise ConfigError("say --preview FILE or --send")
    end = period_end(at if at and at.tzinfo else (at.replace(tzinfo=UTC) if at else datetime.now(UTC)))
    with Storage(settings.database_url) as storage:
        storage.ensure_schema(upgrade=settings.auto_upgrade)
        if preview:
            built = build(storage, digests[name], end)
            subject, _text, html = render(built, settings.templates_dir)
            try:
                preview.write_text(html, encoding="utf-8")
            except OSError as e:
                raise ConfigError(f"cannot write the preview to {preview}: {e.strerror}") from e
            console.print(f"{subject} → {preview}")
        state = Digester(settings, storage, list(digests.values())).run(name, end) if send else None
    if state is not None:
        console.print(f"digest {name!r} for the period ending {end:%Y-%m-%d %H:%M} UTC: {state}")
        if state not in ("sent", "empty"):
            raise typer.Exit(1)


@app.command()
def recluster(
    since: Annotated[
        datetime | None, typer.Option(help="First publication time to redo (ISO 8601; default: all).")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="Redo articles published before this (default: all).")] = None,
) -> None:
    """Place articles again into stories with the current settings, from stored text (nothing is fetched)."""
    from monitor.pipeline.placement import Ingestor
    from monitor.storage import Storage

    settings = _settings()

    def aware(moment: datetime | None) -> datetime | None:
        return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment

    with Storage(settings.database_url) as storage:
        storage.ensure_schema(upgrade=settings.auto_upgrade)
        count = Ingestor(storage, settings.story_params()).recluster(aware(since), aware(until))
        with storage.repository() as repo:
            total = repo.story_count()
    console.print(f"{count} articles placed again; {total} stories in the database")


@app.command("eval")
def eval_(
    path: Annotated[
        Path, typer.Argument(help="Labelled JSONL (import format plus a gold label).", exists=True, dir_okay=False)
    ],
    label: Annotated[str, typer.Option(help="Field holding the gold story label.")] = "story",
) -> None:
    """Score story grouping on a labelled file, in a throwaway database: BCubed and pairwise P/R/F1."""
    from monitor.evaluation import evaluate

    settings = _settings()
    scores = evaluate(path, label=label, params=settings.story_params(), max_line_bytes=settings.import_max_line_bytes)
    console.print_json(json.dumps(scores.as_dict()))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (the daemon also does this at start unless MONITOR_AUTO_UPGRADE=false)."""
    from monitor.storage import Storage

    with Storage(_settings().database_url) as storage:
        storage.upgrade()
        current, _head = storage.schema_status()
    console.print(f"schema at revision {current}")


@db_app.command("status")
def db_status() -> None:
    """Show the schema revision of the database and the one this version needs."""
    from monitor.storage import Storage

    with Storage(_settings().database_url) as storage:
        current, head = storage.schema_status()
    console.print(
        f"database: {current or 'empty'}; this version: {head}; {'up to date' if current == head else 'upgrade needed'}"
    )


def _one_line(error: Exception) -> str:
    """Driver and SQL messages span lines; what a user reads is one."""
    return " ".join(str(error).split())


def _interrupted(error: BaseException | None) -> bool:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def main(args: list[str] | None = None) -> None:
    """Whatever goes wrong reaches the user as one line and an exit code, never as a traceback."""
    try:
        app(args=args, prog_name="monitor")
    except MonitorError as e:
        errors.print(f"monitor: error: {_one_line(e)}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:  # before typer took over
        errors.print("monitor: interrupted", highlight=False)
        sys.exit(130)
    except Exception as e:  # not ours: still one line, with the type that names it
        if _interrupted(e):  # Ctrl-C while a module loaded: C extensions turn it into ImportError
            errors.print("monitor: interrupted", highlight=False)
            sys.exit(130)
        errors.print(f"monitor: internal error: {type(e).__name__}: {_one_line(e)}", highlight=False)
        sys.exit(70)
    except SystemExit as e:
        if e.code == 130:  # typer's silent exit for Ctrl-C inside a command
            errors.print("monitor: interrupted", highlight=False)
        raise
