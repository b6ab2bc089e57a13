"""Digest e-mails: the period's stories ranked by how many outlets covered them, sent at most once a period.

A run (digest name + period end) is recorded before anything is sent; a worker must claim it
(pending → sending) to send it, so a restart or a second worker never sends it twice. A failure before
the message reaches the SMTP server (building, rendering, delivery refused) goes back to pending with a
backoff, and ends as 'failed' with the reason after a bounded number of tries. A run left in 'sending'
(the worker died between the hand-over and recording it) is reported, never resent.

Periods follow the schedule's wall clock in the digest's time zone: a run is named after the scheduled
time, however late the worker fires, and consecutive runs tile across DST changes.
"""

from __future__ import annotations

import logging
import math
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    TemplateError,
    TemplateSyntaxError,
    select_autoescape,
)

from monitor.config import DigestConfig, FeedConfig, Settings
from monitor.errors import ConfigError, DeliveryError
from monitor.search import fold_name, parse_query
from monitor.storage import Article, Repository, Storage
from monitor.text import MONTHS

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
RETRY_BASE = timedelta(minutes=2)
STALE_SENDING = timedelta(minutes=15)
_SENTENCE_END = re.compile(r"(?<=[.!?»])\s+(?=[«\"A-ZÀ-ÖØ-Þ0-9])")


@dataclass(frozen=True)
class Coverage:
    source: str
    title: str
    url: str
    published_at: datetime
    copies: tuple[tuple[str, str], ...] = ()  # (outlet, url) of near-copies of this article, collapsed here


@dataclass(frozen=True)
class DigestStory:
    id: int
    title: str
    broke_at: datetime
    outlet_count: int
    lead: str
    coverage: tuple[Coverage, ...]


@dataclass(frozen=True)
class Digest:
    config: DigestConfig
    start: datetime
    end: datetime
    stories: tuple[DigestStory, ...] = field(default_factory=tuple)


def lead_of(text: str, sentences: int = 3, max_chars: int = 420) -> str:
    """The first two or three sentences of an article, cut at a sentence end where possible."""
    parts = [p.strip() for p in _SENTENCE_END.split(" ".join(text.split())) if p.strip()]
    lead = ""
    for part in parts[:sentences]:
        if lead and len(lead) + len(part) > max_chars:
            break
        lead = f"{lead} {part}".strip()
    return lead if len(lead) <= max_chars else lead[: max_chars - 1].rsplit(" ", 1)[0] + "…"


def _representative(articles: Sequence[Article], centroid: dict[str, float]) -> Article:
    """The original article closest to the story's centroid: the best summary of the whole coverage."""

    def closeness(article: Article) -> float:
        dot = sum(weight * centroid.get(term, 0.0) for term, weight in article.terms.items())
        norm = math.sqrt(sum(v * v for v in centroid.values())) or 1.0
        return dot / norm

    originals = [a for a in articles if a.duplicate_of_id is None] or list(articles)
    return max(originals, key=lambda a: (closeness(a), -a.id))


def _story(
    repo: Repository, story_id: int, title: str, broke_at: datetime, outlets: int, centroid: dict[str, float]
) -> DigestStory:
    articles = repo.story_articles(story_id)
    copies: dict[int, list[tuple[str, str]]] = {}
    for article in articles:
        if article.duplicate_of_id is not None:
            copies.setdefault(article.duplicate_of_id, []).append((article.source, article.url))
    by_id = {a.id: a for a in articles}
    for copied in list(copies):  # a copy of a copy is listed under the first original
        root = copied
        while by_id.get(root) is not None and by_id[root].duplicate_of_id is not None:
            root = by_id[root].duplicate_of_id  # type: ignore[assignment]
        if root != copied:
            copies.setdefault(root, []).extend(copies.pop(copied))
    coverage, seen_outlets = [], set()
    for article in articles:
        if article.duplicate_of_id is not None:
            continue
        coverage.append(
            Coverage(
                article.source, article.title, article.url, article.published_at, tuple(copies.get(article.id, ()))
            )
        )
        seen_outlets.add(article.source)
    return DigestStory(
        story_id, title, broke_at, outlets, lead_of(_representative(articles, centroid).text), tuple(coverage)
    )


def build(storage: Storage, config: DigestConfig, end: datetime, start: datetime | None = None) -> Digest:
    """The digest for the period ending at ``end`` (starting where the schedule says unless ``start`` is given):
    what would be sent, without sending it."""
    start = period_start(config, end) if start is None else start
    with storage.repository() as repo:
        stories = repo.stories_for_digest(
            start,
            end,
            query=parse_query(config.query) if config.query else None,
            outlets=config.outlets,
            min_outlets=config.min_outlets,
            limit=config.max_stories,
        )
        built = tuple(_story(repo, s.id, s.title, s.first_published_at, s.outlet_count, s.centroid) for s in stories)
    return Digest(config, start, end, built)


def french_date(moment: datetime, zone: str, *, with_time: bool = True) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    day = "1er" if local.day == 1 else str(local.day)
    text = f"{day} {MONTHS[local.month - 1]} {local.year}"
    return f"{text} à\u00a0{local:%H:%M}" if with_time else text  # keep "à 07:00" on one line


def _environment(templates_dir: Path | None) -> Environment:
    loaders = [FileSystemLoader(str(templates_dir))] if templates_dir else []
    env = Environment(
        loader=ChoiceLoader([*loaders, PackageLoader("monitor", "templates")]),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), disabled_extensions=("txt", "txt.j2")),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["french_date"] = french_date
    return env


def render(digest: Digest, templates_dir: Path | None = None) -> tuple[str, str, str]:
    """(subject, plain text, HTML) from the Jinja2 templates; a user directory overrides the shipped ones."""
    env = _environment(templates_dir)
    count = len(digest.stories)
    day = french_date(digest.end, digest.config.timezone, with_time=False)
    noun = "sujet" if count == 1 else "sujets"
    subject = (
        f"Veille « {digest.config.name} » du {day} : {count} {noun}"
        if count
        else f"Veille « {digest.config.name} » du {day} : rien de nouveau"
    )
    context = {"digest": digest, "subject": subject, "zone": digest.config.timezone, "day": day}
    rendered = []
    for name in ("digest.txt.j2", "digest.html.j2"):
        try:
            rendered.append(env.get_template(name).render(context))
        except TemplateError as e:  # a user's template (MONITOR_TEMPLATES_DIR) with a mistake in it
            line = f", line {e.lineno}" if isinstance(e, TemplateSyntaxError) else ""
            raise ConfigError(f"template {name} ({templates_dir or 'shipped'}){line}: {e.message}") from e
    text, html = rendered
    return subject, text, html


def message(digest: Digest, settings: Settings, run_id: int) -> EmailMessage:
    subject, text, html = render(digest, settings.templates_dir)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(digest.config.recipients)
    msg["Date"] = format_datetime(datetime.now(UTC))
    domain = settings.smtp_from.rsplit("@", 1)[-1]
    msg["Message-ID"] = make_msgid(idstring=f"digest-{run_id}", domain=domain)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def send_mail(msg: EmailMessage, settings: Settings, digest: str) -> None:
    """Hand the message to the SMTP server; DeliveryError (with the digest's name) on any failure."""
    try:
        smtp: smtplib.SMTP
        if settings.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(
                settings.smtp_host,
                settings.smtp_port,
                timeout=settings.smtp_timeout,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout)
        with smtp:
            if settings.smtp_security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                smtp.login(settings.smtp_user, password)
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as e:
        raise DeliveryError(digest, f"SMTP {settings.smtp_host}:{settings.smtp_port}: {e}") from e


def period_end(now: datetime) -> datetime:
    """Runs are keyed to the minute: every worker firing the same cron minute names the same run."""
    return now.astimezone(UTC).replace(second=0, microsecond=0)


# How far a zone's clock may move at once (DST: 1 h; some zones have moved 2 h): wall-clock fire times that
# close to the edge of a search may name moments on the other side of it.
_CLOCK_CHANGE = timedelta(hours=2)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The moment a wall-clock time names: a time the autumn change repeats counts once, at its first
    occurrence; a time the spring change skips falls after the gap, as the scheduler fires it."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def last_fire(config: DigestConfig, at: datetime) -> datetime | None:
    """The latest time the digest's schedule names at or before ``at``; None if it names none in 30 years.

    The cron expression is matched on the wall clock of the digest's time zone (a UTC trigger over naive
    local times, which has no DST to get wrong), then each wall-clock time is placed with ``_instant``.
    """
    zone = ZoneInfo(config.timezone)
    wall_trigger = CronTrigger.from_crontab(config.schedule, timezone=UTC)
    here = _wall(at, zone)
    for window in (timedelta(hours=4**k) for k in range(10)):  # 1 h, 4 h, … 30 years
        latest = None
        fire = wall_trigger.get_next_fire_time(None, (here - window - _CLOCK_CHANGE).replace(tzinfo=UTC))
        while fire is not None and fire.replace(tzinfo=None) <= here + _CLOCK_CHANGE:
            moment = _instant(fire.replace(tzinfo=None), zone)
            if moment <= at and (latest is None or moment > latest):
                latest = moment
            fire = wall_trigger.get_next_fire_time(None, fire + timedelta(seconds=1))
        if latest is not None:
            return latest
    return None


def scheduled_end(config: DigestConfig, now: datetime) -> datetime:
    """The end of the period a digest firing at ``now`` covers: the latest scheduled time at or before now,
    so a worker firing late, a second worker, or the scheduler firing twice in a repeated hour name one run."""
    end = last_fire(config, now)
    if end is None:
        raise ConfigError(f"{config.schedule!r} names no time before {now:%Y-%m-%d %H:%M}", digest=config.name)
    return end


def period_start(config: DigestConfig, end: datetime) -> datetime:
    """Where the period ending at ``end`` starts.

    When ``period`` is the wall-clock time since the previous scheduled time (a daily 07:00 digest with
    period 24h), the period starts at that previous time, so consecutive periods tile with no gap and no
    overlap: the day the clocks go forward it covers 23 h, the day they go back 25 h. Otherwise (a period
    longer or shorter than the spacing, or an end off the schedule) it is ``period`` before ``end``.
    """
    span = timedelta(seconds=config.period_s)
    previous = last_fire(config, end - timedelta(microseconds=1))
    zone = ZoneInfo(config.timezone)
    if previous is not None and _wall(end, zone) - _wall(previous, zone) == span:
        return previous
    return end - span


def warn_unknown_outlets(digests: Sequence[DigestConfig], feeds: Sequence[FeedConfig]) -> list[str]:
    """Log a warning for each digest outlet no feed credits its articles to (accents and case aside), and
    return them: a typo would silently filter everything out; imported archives may still have it."""
    known = {fold_name(feed.outlet) for feed in feeds}
    unknown = []
    for digest in digests:
        for outlet in digest.outlets:
            if fold_name(outlet) not in known:
                log.warning("digest %r, field 'outlets': no feed has the outlet %r", digest.name, outlet)
                unknown.append(outlet)
    return unknown


class Digester:
    def __init__(self, settings: Settings, storage: Storage, digests: Sequence[DigestConfig]) -> None:
        self.settings = settings
        self.storage = storage
        self.digests = {d.name: d for d in digests}

    def run(self, name: str, end: datetime) -> str:
        """Record the run for the period ending at ``end`` (once), then send it if this worker wins the claim.
        Returns its state."""
        config = self.digests[name]
        with self.storage.repository() as repo:
            run = repo.record_digest_run(name, period_start(config, end), end)
        return self._attempt(run.id)

    def retry_due(self) -> None:
        """Retry runs that could not be built or delivered, and report runs a crash left half-sent."""
        now = datetime.now(UTC)
        with self.storage.repository() as repo:
            for run in repo.digest_runs(states=["sending"]):
                if run.claimed_at and now - run.claimed_at > STALE_SENDING:
                    run.state = "failed"
                    run.last_error = (
                        "interrupted during delivery (worker stopped); not resent automatically "
                        "so nobody gets it twice: check the mail server's log"
                    )
                    log.error("digest %s for %s: %s", run.digest, run.period_end, run.last_error)
            pending = [r.id for r in repo.digest_runs(states=["pending"]) if r.next_attempt_at <= now]
        for run_id in pending:
            self._attempt(run_id)

    def _attempt(self, run_id: int) -> str:
        now = datetime.now(UTC)
        with self.storage.repository() as repo:
            run = repo.digest_run(run_id)
            config = self.digests.get(run.digest)
            if config is None or not repo.claim_digest_run(run_id, now):
                return run.state
            start, end = run.period_start, run.period_end
        state, error, message_id, story_count = "sent", None, None, None
        try:
            digest = build(self.storage, config, end, start)
            story_count = len(digest.stories)
            msg = message(digest, self.settings, run_id) if digest.stories or config.send_empty else None
        except Exception as e:  # nothing has left yet, so any failure (a user's template too) is safe to retry
            state, error = "pending", f"building the digest failed: {type(e).__name__}: {e}"
        else:
            if msg is None:
                state = "empty"
            else:
                message_id = msg["Message-ID"]
                try:
                    send_mail(msg, self.settings, config.name)
                except DeliveryError as e:
                    state, error = "pending", str(e)
        with self.storage.repository() as repo:
            run = repo.digest_run(run_id)
            run.story_count, run.last_error = story_count, error
            if state == "pending":
                if run.attempts >= MAX_ATTEMPTS:
                    state = "failed"
                    log.error(
                        "digest %s for %s..%s given up after %d tries: %s", config.name, start, end, run.attempts, error
                    )
                else:
                    run.next_attempt_at = now + RETRY_BASE * 2 ** (run.attempts - 1)
                    log.warning("digest %s: not sent, retrying at %s: %s", config.name, run.next_attempt_at, error)
            run.state = state
            if state == "sent":
                run.message_id, run.sent_at = message_id, datetime.now(UTC)
        return state
