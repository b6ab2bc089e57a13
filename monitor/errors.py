"""One exception tree for the whole package.

MonitorError
├── ConfigError          bad settings or feeds.yaml; carries the feed name and field
├── StorageError         database unreachable or schema not current
│   └── SchemaOutOfDate
├── FetchError           an HTTP fetch failed; carries the URL and a failure kind
│   └── AddressRefused   the URL resolves to an address the guard refuses
├── FeedError            bytes fetched but not a usable feed; carries the feed URL and a kind
│                        (not_a_feed, challenge, parse)
├── InvalidURL           a URL that cannot name an article (bad port, no host, ...); carries it and why
├── ExtractionError      a page gave no article text; carries the URL
├── ImportLineError      one JSONL line of an import is unusable; carries the line number
├── DeliveryError        a digest could not be handed to the SMTP server; carries the digest name
└── IndexMismatch        stored MinHash signatures were built with other parameters

Foreign exceptions (httpx, SQLAlchemy, YAML, pydantic) are wrapped at the boundary with
``raise ... from e`` so callers only ever need to catch MonitorError.
"""

from __future__ import annotations


class MonitorError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(MonitorError):
    def __init__(
        self, message: str, *, feed: str | None = None, digest: str | None = None, field: str | None = None
    ) -> None:
        parts = (
            f"feed {feed!r}" if feed else "",
            f"digest {digest!r}" if digest else "",
            f"field {field!r}" if field else "",
        )
        where = ", ".join(p for p in parts if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.feed = feed
        self.digest = digest
        self.field = field


class StorageError(MonitorError):
    pass


class SchemaOutOfDate(StorageError):
    pass


class FetchError(MonitorError):
    """kind is one of: network, timeout, tls, http, too_large, content_type, refused, redirects, robots.

    retry_after carries the server's Retry-After (seconds) on a 429 or 503.
    """

    def __init__(
        self, url: str, kind: str, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{url}: {kind}: {message}")
        self.url = url
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


class AddressRefused(FetchError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, "refused", reason)
        self.reason = reason


class FeedError(MonitorError):
    def __init__(self, url: str, kind: str, message: str) -> None:
        super().__init__(f"{url}: {kind}: {message}")
        self.url = url
        self.kind = kind


class InvalidURL(MonitorError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"invalid URL {url[:200]!r}: {reason}")
        self.url, self.reason = url, reason


class ExtractionError(MonitorError):
    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url, self.reason = url, message

    def __reduce__(self) -> tuple[type[ExtractionError], tuple[str, str]]:
        return ExtractionError, (self.url, self.reason)  # raised in an extraction process, re-raised here


class ImportLineError(MonitorError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


class IndexMismatch(MonitorError):
    pass


class DeliveryError(MonitorError):
    def __init__(self, digest: str, message: str) -> None:
        super().__init__(f"digest {digest!r}: {message}")
        self.digest = digest
