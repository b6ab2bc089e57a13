"""Settings from the environment (MONITOR_*), sources from feeds.yaml, both validated at start.

Environment first (12-factor, docker-compose friendly); feeds.yaml only lists sources. Every
validation error names the feed and the field, so a typo in a 40-feed file is found at once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MIN_INTERVAL_S = 60
MAX_INTERVAL_S = 7 * 24 * 3600
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Settings(BaseSettings):
    """Every knob of the service; each field is read from MONITOR_<FIELD_NAME>."""

    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore")

    database_url: str = "sqlite:///monitor.db"
    feeds_file: Path = Path("feeds.yaml")
    # "false", "true", or a comma-separated list of networks such as "127.0.0.0/8,::1/128".
    allow_private_addresses: str = "false"
    user_agent: str = "monitor-news-bot/0.1 (+https://github.com/monitor-news/monitor; media monitoring)"
    host_min_interval: float = 1.0
    host_concurrency: int = 2
    global_concurrency: int = 16
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    request_deadline: float = 60.0  # whole request, body included: stops slow drips
    max_body_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    max_items_per_feed: int = 200
    default_interval: str = "15m"
    max_interval: str = "6h"  # quiet feeds slow down to this, not further
    disable_after_days: float = 7.0  # a feed failing without a break this long is disabled, with the reason
    item_max_attempts: int = 5  # tries for an article page before giving up with the reason
    poll_seconds: float = 30.0
    auto_upgrade: bool = True
    log_level: str = "INFO"

    @field_validator("allow_private_addresses")
    @classmethod
    def _check_networks(cls, value: str) -> str:
        parse_allowed_networks(value)
        return value

    @field_validator("default_interval", "max_interval")
    @classmethod
    def _check_interval(cls, value: str) -> str:
        parse_interval(value)
        return value

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


def parse_interval(value: object) -> int:
    """Seconds from 900, '900s', '15m', '2h' or '1d', within [1 minute, 7 days]."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 900, '15m', '2h')")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise ValueError(f"{value!r} is outside [{MIN_INTERVAL_S}s, {MAX_INTERVAL_S // 86400}d]")
    return int(seconds)


@dataclass(frozen=True)
class FeedConfig:
    name: str
    url: str
    interval_s: int
    language: str = "fr"
    tags: tuple[str, ...] = field(default_factory=tuple)
    robots: bool = True


_FEED_KEYS = {"name", "url", "interval", "language", "tags", "robots"}


def load_feeds(path: Path, default_interval: str = "15m") -> list[FeedConfig]:
    """Read and validate feeds.yaml; raise ConfigError naming the feed and field at the first problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read feeds file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
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
    unknown = sorted(set(entry) - _FEED_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}", feed=name, field=unknown[0])
    url = entry.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError("missing, or not an http(s) URL", feed=name, field="url")
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
    return FeedConfig(
        name=name.strip(), url=url.strip(), interval_s=interval, language=language, tags=tuple(tags), robots=robots
    )
