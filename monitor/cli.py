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
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from monitor.config import Settings
from monitor.errors import ConfigError, MonitorError
from monitor.ops.logs import configure_logging

if _GUARDED:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, main() reports it

app = typer.Typer(
    help="Media monitoring: French tech-news feeds in, stories out, stored in SQL.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


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
            "--once", help="Fetch every feed once, ingest, run the story merge pass if its schedule is due, and exit."
        ),
    ] = False,
) -> None:
    """Run the daemon: poll due feeds and ingest new articles until SIGTERM/SIGINT."""
    from monitor.daemon.service import run_forever, run_once

    settings = _settings()
    if not once:
        asyncio.run(run_forever(settings))
        return
    report = asyncio.run(run_once(settings))
    console.print(
        f"{report.feeds_ok} feeds fetched, {report.feeds_failed} failed; {report.items_new} new items, "
        f"{report.articles_added} articles added, {report.items_failed} items failed; "
        f"{report.stories_merged} stories merged"
    )
    for line in report.errors[:50]:
        errors.print(f"  {line}", markup=False, highlight=False)
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
    storage = Storage(settings.database_url)
    storage.ensure_schema(upgrade=settings.auto_upgrade)
    ingestor = Ingestor(storage, settings.story_params())
    stdin = path == "-"
    name = "stdin" if stdin else path
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
    for error in report.errors:
        errors.print(f"{name}:{_one_line(error)}", markup=False, highlight=False)
    console.print(
        f"{report.added} articles added, {report.already_known} already known, {len(report.errors)} lines skipped, "
        f"{report.merged} stories merged"
    )


@app.command()
def stories(limit: Annotated[int, typer.Option(help="How many stories.")] = 20) -> None:
    """Show the latest stories with their article counts and outlets."""
    from monitor.storage import Storage

    storage = Storage(_settings().database_url)
    storage.ensure_schema(upgrade=False)
    table = Table("story", "first published (UTC)", "articles", "outlets", "title")
    with storage.repository() as repo:
        for story, outlets in repo.latest_stories(limit):
            table.add_row(
                str(story.id),
                f"{story.first_published_at:%Y-%m-%d %H:%M}",
                str(story.article_count),
                ", ".join(outlets),
                story.title,
            )
    console.print(table)


@app.command()
def feeds() -> None:
    """Show every feed's health: last success, failures, last error, next fetch."""
    from monitor.storage import Storage

    storage = Storage(_settings().database_url)
    storage.ensure_schema(upgrade=False)
    table = Table("feed", "state", "last success", "failures", "next fetch", "last error")
    with storage.repository() as repo:
        for feed in repo.feeds():
            state = "disabled" if not feed.enabled else ("failing" if feed.consecutive_failures else "ok")
            table.add_row(
                feed.name,
                state,
                f"{feed.last_success_at:%Y-%m-%d %H:%M}" if feed.last_success_at else "never",
                str(feed.consecutive_failures),
                f"{feed.next_fetch_at:%Y-%m-%d %H:%M}",
                feed.disabled_reason or feed.last_error or "",
            )
    console.print(table)


@app.command()
def search(
    query: Annotated[
        str, typer.Argument(help='Words and "quoted phrases"; all must match (accents and endings do not matter).')
    ],
    limit: Annotated[int, typer.Option(help="How many stories.")] = 20,
) -> None:
    """Show the stories whose coverage matches a watch query (French full-text search)."""
    from monitor.search import parse_query
    from monitor.storage import Storage

    storage = Storage(_settings().database_url)
    storage.ensure_schema(upgrade=False)
    try:
        parsed = parse_query(query)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    table = Table("story", "last published (UTC)", "articles", "outlets", "title")
    with storage.repository() as repo:
        stories = repo.stories_for_digest(
            datetime.min.replace(tzinfo=UTC),
            datetime.max.replace(tzinfo=UTC),
            query=parsed,
            outlets=(),
            min_outlets=1,
            limit=limit,
        )
        for story in stories:
            table.add_row(
                str(story.id),
                f"{story.last_published_at:%Y-%m-%d %H:%M}",
                str(story.article_count),
                str(story.outlet_count),
                story.title,
            )
    console.print(table)
    console.print(f"{len(stories)} stories match {parsed}")


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
    storage = Storage(settings.database_url)
    storage.ensure_schema(upgrade=settings.auto_upgrade)
    end = period_end(at if at and at.tzinfo else (at.replace(tzinfo=UTC) if at else datetime.now(UTC)))
    if preview:
        built = build(storage, digests[name], end)
        subject, _text, html = render(built, settings.templates_dir)
        try:
            preview.write_text(html, encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot write the preview to {preview}: {e.strerror}") from e
        console.print(f"{subject} → {preview}")
    if send:
        state = Digester(settings, storage, list(digests.values())).run(name, end)
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
    storage = Storage(settings.database_url)
    storage.ensure_schema(upgrade=settings.auto_upgrade)

    def aware(moment: datetime | None) -> datetime | None:
        return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment

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

    storage = Storage(_settings().database_url)
    storage.upgrade()
    current, _head = storage.schema_status()
    console.print(f"schema at revision {current}")


@db_app.command("status")
def db_status() -> None:
    """Show the schema revision of the database and the one this version needs."""
    from monitor.storage import Storage

    current, head = Storage(_settings().database_url).schema_status()
    console.print(
        f"database: {current or 'empty'}; this version: {head}; {'up to date' if current == head else 'upgrade needed'}"
    )


def _one_line(error: Exception) -> str:
    """Driver and SQL messages span lines; what a user reads is one."""
    return " ".join(str(error).split())


def main() -> None:
    """Whatever goes wrong reaches the user as one line and an exit code, never as a traceback."""
    try:
        app()
    except MonitorError as e:
        errors.print(f"monitor: error: {_one_line(e)}", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:  # before typer took over
        errors.print("monitor: interrupted", markup=False, highlight=False)
        sys.exit(130)
    except SystemExit as e:
        if e.code == 130:  # typer's silent exit for Ctrl-C inside a command
            errors.print("monitor: interrupted", markup=False, highlight=False)
        raise
