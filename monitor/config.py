"""Settings from the environment (MONITOR_*), sources from feeds.yaml, both validated at start.

Environment first (12-factor, docker-compose friendly); feeds.yaml only lists sources. Every
validation error names the feed and the field, so a typo in a 40-feed file is found at once.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.errors import ConfigError
from monitor.grouping.params import StoryParams
from monitor.limits import MAX_FEED_NAME_CHARS, MAX_IMPORT_LINE_BYTES, MAX_OUTLET_CHARS, MAX_URL_CHARS, without_controls

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MIN_INTERVAL_S = 60
MAX_INTERVAL_S = 7 * 24 * 3600
HOUR_S = 3600
DAY_S = 86400
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Settings(BaseSettings):
    """Every knob of the service; each field is read from MONITOR_<FIELD_NAME>."""

    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore", allow_inf_nan=False)

    database_url: str = "sqlite:///monitor.db"
    feeds_file: Path = Path("feeds.yaml")
    # "false", "true", or a comma-separated list of networks such as "127.0.0.0/8,::1/128".
    allow_private_addresses: str = "false"
    user_agent: str = "monitor-news-bot/0.1 (+https://github.com/monitor-news/monitor; media monitoring)"
    # Upper bounds: past them a timedelta or a socket timeout overflows (OverflowError at the first use, not at
    # start), or the machine runs out of processes, connections or memory.
    host_min_interval: float = Field(default=1.0, ge=0, le=HOUR_S)
    host_concurrency: int = Field(default=2, ge=1, le=64)  # 0 would wait for a free slot forever
    global_concurrency: int = Field(default=16, ge=1, le=1024)
    connect_timeout: float = Field(default=10.0, gt=0, le=HOUR_S)
    read_timeout: float = Field(default=30.0, gt=0, le=HOUR_S)
    request_deadline: float = Field(default=60.0, gt=0, le=HOUR_S)  # whole request, body included: stops slow drips
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    max_redirects: int = Field(default=5, ge=0, le=30)
    max_items_per_feed: int = Field(default=200, ge=1, le=10_000)
    default_interval: str = "15m"
    max_interval: str = "6h"  # quiet feeds slow down to this, not further
    disable_after_days: float = Field(default=7.0, gt=0, le=3650)  # failing without a break this long: disabled
    # tries for an article page before giving up with the reason; the wait between them doubles each time
    item_max_attempts: int = Field(default=5, ge=1, le=20)
    # a live worker renews what it holds; a dead one's runs out
    lease_seconds: float = Field(default=60.0, gt=0, le=DAY_S)
    poll_seconds: float = Field(default=30.0, gt=0, le=DAY_S)
    extract_processes: int = Field(default=0, ge=0, le=64)  # 0: extraction in one thread of the worker; N: N processes
    extract_timeout: float = Field(default=30.0, gt=0, le=HOUR_S)  # seconds one page's extraction may take
    # a longer import line is skipped; reading one takes about 35 times its size in memory
    import_max_line_bytes: int = Field(default=MAX_IMPORT_LINE_BYTES, ge=1024, le=64 * 1024 * 1024)
    auto_upgrade: bool = True
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    http_port: int | None = Field(default=None, ge=1, le=65535)  # /healthz, /readyz, /metrics; off unless set
    http_host: str = Field(default="127.0.0.1", min_length=1)  # 0.0.0.0 in a container
    retention_days: float = Field(default=90.0, gt=0, le=36500)  # raw HTML and fetch history older are pruned
    smtp_host: str = Field(default="localhost", min_length=1)
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None  # never shown: repr, logs and errors print ********
    smtp_from: str = "monitor@localhost"
    smtp_timeout: float = Field(default=30.0, gt=0, le=HOUR_S)
    # Overrides of StoryParams (monitor/grouping/params.py); unset: the default.
    story_threshold: float | None = Field(default=None, gt=0, le=1)
    story_window_days: float | None = Field(default=None, gt=0, le=365)
    story_max_span_days: float | None = Field(default=None, gt=0, le=365)
    story_merge_threshold: float | None = Field(default=None, gt=0, le=1)
    story_refine_rounds: int | None = Field(default=None, ge=0, le=100)
    # The regrouping safety net (cron, UTC): placement already groups again what each batch touches; this
    # goes over every story changed since its last run, a chunk per transaction.
    merge_schedule: str = "30 3 * * *"
    templates_dir: Path | None = None  # your own digest.html.j2 / digest.txt.j2 override the shipped ones
    timezone: str = "Europe/Paris"  # times are stored in UTC and shown in this zone (web, CLI)
    web_token: SecretStr | None = None  # `monitor web`: required on every request; needed off loopback
    web_port: int | None = Field(default=None, ge=1, le=65535)  # `monitor web` port when --port is not given

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {value!r}") from e
        return value

    @field_validator("web_token")
    @classmethod
    def _check_web_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("allow_private_addresses")
    @classmethod
    def _check_networks(cls, value: str) -> str:
        parse_allowed_networks(value)
        return value

    @field_validator("merge_schedule")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(value, timezone="UTC")
        return value

    @field_validator("default_interval")
    @classmethod
    def _check_interval(cls, value: str) -> str:
        parse_interval(value)
        return value

    @field_validator("max_interval")
    @classmethod
    def _check_max_interval(cls, value: str, info: ValidationInfo) -> str:
        """Checked here, not in a model validator, so the error names MONITOR_MAX_INTERVAL."""
        seconds = parse_interval(value)
        default = info.data.get("default_interval")
        if default is not None and seconds < parse_interval(default):
            raise ValueError(f"{value!r} is shorter than MONITOR_DEFAULT_INTERVAL ({default!r})")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in logging.getLevelNamesMapping() or level == "NOTSET":
            raise ValueError(f"not a log level: {value!r} (use DEBUG, INFO, WARNING, ERROR or CRITICAL)")
        return level

    @field_validator("user_agent")
    @classmethod
    def _check_one_line(cls, value: str) -> str:
        """It goes into every request's headers: an empty one or a line break would garble them."""
        if not value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must be one non-empty line of text")
        return value

    @field_validator("smtp_from")
    @classmethod
    def _check_sender(cls, value: str) -> str:
        if not re.match(r"^[^@\s<>]+@[^@\s<>]+$", value):
            raise ValueError(f"not an e-mail address: {value!r}")
        return value

    @field_validator("templates_dir")
    @classmethod
    def _check_templates_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    def story_params(self) -> StoryParams:
        params = StoryParams()
        if self.story_threshold is not None:
            params = replace(params, threshold=self.story_threshold)
        if self.story_window_days is not None:
            params = replace(params, window_days=self.story_window_days)
        if self.story_max_span_days is not None:
            params = replace(params, max_span_days=self.story_max_span_days)
        if self.story_merge_threshold is not None:
            params = replace(params, merge_threshold=self.story_merge_threshold)
        if self.story_refine_rounds is not None:
            params = replace(params, refine_rounds=self.story_refine_rounds)
        return params

    def max_interval_s(self) -> int:
        return parse_interval(self.max_interval)

    def allowed_networks(self) -> list[Network] | None:
        """None means every address is allowed; [] means only public addresses."""
        return parse_allowed_networks(self.allow_private_addresses)


def parse_allowed_networks(value: str) -> list[Network] | None:
    text = value.strip().lower()
    if text in ("", "false", "0", "no"):
        return []
    if text in ("true", "1", "yes"):
        return None
    try:
        return [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]
    except ValueError as e:
        raise ValueError(f"MONITOR_ALLOW_PRIVATE_ADDRESSES: {e}") from e


def parse_interval(value: object, maximum_s: int = MAX_INTERVAL_S) -> int:
    """Seconds from 900, '900s', '15m', '2h' or '1d', within [1 minute, ``maximum_s``] (7 days by default)."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 900, '15m', '2h')")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if not MIN_INTERVAL_S <= seconds <= maximum_s:
        raise ValueError(f"{value!r} is outside [{MIN_INTERVAL_S}s, {maximum_s // 86400}d]")
    return int(seconds)


@dataclass(frozen=True)
class FeedConfig:
    name: str
    url: str
    interval_s: int
    language: str = "fr"
    tags: tuple[str, ...] = field(default_factory=tuple)
    robots: bool = True
    outlet: str = ""  # the outlet its articles are credited to (articles.source); the feed's name when not set

    def __post_init__(self) -> None:
        if not self.outlet:
            object.__setattr__(self, "outlet", self.name)


_FEED_KEYS = {"name", "url", "interval", "language", "tags", "robots", "outlet"}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read feeds file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e


def load_feeds(path: Path, default_interval: str = "15m") -> list[FeedConfig]:
    """Read and validate feeds.yaml; raise ConfigError naming the feed and field at the first problem."""
    raw = _read_yaml(path)
    entries = raw.get("feeds") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a top-level 'feeds:' list", field="feeds")
    fallback = parse_interval(default_interval)
    feeds: list[FeedConfig] = []
    names: set[str] = set()
    urls: dict[str, str] = {}
    for position, entry in enumerate(entries, start=1):
        feed = _parse_feed(entry, position, fallback)
        if feed.name in names:
            raise ConfigError("duplicate feed name", feed=feed.name, field="name")
        if feed.url in urls:
            raise ConfigError(f"same url as feed {urls[feed.url]!r}", feed=feed.name, field="url")
        names.add(feed.name)
        urls[feed.url] = feed.name
        feeds.append(feed)
    return feeds


def _parse_feed(entry: Any, position: int, fallback_interval: int) -> FeedConfig:
    if not isinstance(entry, dict):
        raise ConfigError(f"feed #{position} is not a mapping", feed=f"#{position}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("missing or empty", feed=f"#{position}", field="name")
    _check_storable(name.strip(), MAX_FEED_NAME_CHARS, feed=name if len(name) <= 80 else name[:79] + "…", field="name")
    unknown = sorted(set(entry) - _FEED_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}", feed=name, field=unknown[0])
    url = entry.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError("missing, or not an http(s) URL", feed=name, field="url")
    _check_storable(url.strip(), MAX_URL_CHARS, feed=name, field="url")
    try:
        interval = parse_interval(entry["interval"]) if "interval" in entry else fallback_interval
    except ValueError as e:
        raise ConfigError(str(e), feed=name, field="interval") from e
    language = entry.get("language", "fr")
    if not isinstance(language, str) or not re.match(r"^[a-z]{2,3}(-[A-Za-z]{2})?$", language):
        raise ConfigError(f"not a language code: {language!r}", feed=name, field="language")
    tags = entry.get("tags", [])
    if not isinstance(tags, Sequence) or isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise ConfigError("must be a list of strings", feed=name, field="tags")
    robots = entry.get("robots", True)
    if not isinstance(robots, bool):
        raise ConfigError("must be true or false", feed=name, field="robots")
    outlet = entry.get("outlet", name)
    if not isinstance(outlet, str) or not outlet.strip():
        raise ConfigError("must be a non-empty name", feed=name, field="outlet")
    _check_storable(outlet.strip(), MAX_OUTLET_CHARS, feed=name, field="outlet")
    return FeedConfig(
        name=name.strip(),
        url=url.strip(),
        interval_s=interval,
        language=language,
        tags=tuple(tags),
        robots=robots,
        outlet=outlet.strip(),
    )


def _check_storable(value: str, limit: int, *, feed: str, field: str) -> None:
    """What the feeds table can hold: PostgreSQL would refuse a longer value or a NUL at start-up, in a
    database error naming neither the feed nor the field."""
    if len(value) > limit:
        raise ConfigError(f"longer than {limit} characters", feed=feed, field=field)
    if without_controls(value) != value:
        raise ConfigError("must not hold control characters", feed=feed, field=field)


@dataclass(frozen=True)
class DigestConfig:
    """One digest e-mail: who gets it, when, covering what period, filtered by an optional watch query."""

    name: str
    recipients: tuple[str, ...]
    schedule: str  # cron expression, in ``timezone``
    timezone: str = "Europe/Paris"
    period_s: int = 86400
    query: str | None = None  # words and "quoted phrases", all required
    outlets: tuple[str, ...] = ()  # only stories covered by one of these outlets
    min_outlets: int = 1
    max_stories: int = 20
    send_empty: bool = False  # send a short "nothing new" note instead of nothing


_DIGEST_KEYS = {
    "name",
    "recipients",
    "schedule",
    "timezone",
    "period",
    "query",
    "outlets",
    "min_outlets",
    "max_stories",
    "send_empty",
}
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
MAX_PERIOD_S = 31 * 86400


def load_digests(path: Path) -> list[DigestConfig]:
    """The optional ``digests:`` section of feeds.yaml, validated; errors name the digest and field."""
    raw = _read_yaml(path)
    entries = raw.get("digests", []) if isinstance(raw, dict) else []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'digests:' must be a list", field="digests")
    digests = [_parse_digest(entry, position) for position, entry in enumerate(entries, start=1)]
    names = [d.name for d in digests]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("duplicate digest name", digest=name, field="name")
    return digests


def _parse_digest(entry: Any, position: int) -> DigestConfig:
    from apscheduler.triggers.cron import CronTrigger

    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise ConfigError("missing or empty", digest=f"#{position}", field="name")
    name = entry["name"].strip()
    unknown = sorted(set(entry) - _DIGEST_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}", digest=name, field=unknown[0])
    recipients = entry.get("recipients")
    if isinstance(recipients, str):
        recipients = [recipients]
    if (
        not isinstance(recipients, list)
        or not recipients
        or not all(isinstance(r, str) and _EMAIL.match(r) for r in recipients)
    ):
        raise ConfigError("needs a list of e-mail addresses", digest=name, field="recipients")
    timezone = entry.get("timezone", "Europe/Paris")
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"unknown time zone {timezone!r}", digest=name, field="timezone") from e
    schedule = entry.get("schedule")
    try:
        CronTrigger.from_crontab(str(schedule), timezone=str(timezone))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"not a cron expression ({schedule!r}): {e}", digest=name, field="schedule") from e
    try:
        period = parse_interval(entry.get("period", "24h"), maximum_s=MAX_PERIOD_S)
    except ValueError as e:
        raise ConfigError(str(e), digest=name, field="period") from e
    query = entry.get("query")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise ConfigError("must be a non-empty string", digest=name, field="query")
    if query is not None:
        from monitor.search import parse_query

        try:  # a query of stop words or punctuation only would match nothing, every day, in silence
            parse_query(query)
        except ValueError as e:
            raise ConfigError(str(e), digest=name, field="query") from e
    outlets = entry.get("outlets", [])
    if not isinstance(outlets, list) or not all(isinstance(o, str) for o in outlets):
        raise ConfigError("must be a list of outlet names", digest=name, field="outlets")
    numbers = {}
    for key, default in (("min_outlets", 1), ("max_stories", 20)):
        value = entry.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError("must be a whole number ≥ 1", digest=name, field=key)
        numbers[key] = value
    send_empty = entry.get("send_empty", False)
    if not isinstance(send_empty, bool):
        raise ConfigError("must be true or false", digest=name, field="send_empty")
    return DigestConfig(
        name=name,
        recipients=tuple(recipients),
        schedule=str(schedule),
        timezone=str(timezone),
        period_s=period,
        query=query.strip() if query else None,
        outlets=tuple(outlets),
        min_outlets=numbers["min_outlets"],
        max_stories=numbers["max_stories"],
        send_empty=send_empty,
    )
