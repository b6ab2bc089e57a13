"""HTTP fetching of feeds and article pages: polite, bounded, and refusing private addresses.

Every request goes through ``Fetcher.get``: one budget per host (minimum spacing and a
concurrency cap) shared by feed and article requests, a global cap, redirects followed by
hand so each hop is checked by the address guard *before* any connection is opened, and a
body-size limit enforced while streaming (decoded bytes, so a gzip bomb stops early too).
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import io
import ipaddress
import math
import re
import select
import socket
import ssl
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import feedparser
import httpcore
import httpx

from monitor.config import Network, Settings
from monitor.errors import AddressRefused, FeedError, FetchError
from monitor.limits import MAX_TITLE_CHARS, MAX_URL_CHARS, clip
from monitor.urls import RefusedURL, canonical_url

FEED_TYPES = ("xml", "rss", "atom", "rdf", "text/html", "text/plain", "application/octet-stream")
PAGE_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
_REDIRECTS = {301, 302, 303, 307, 308}


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def _resolve(host: str, port: int) -> list[str]:
    """The host's addresses in the order the system prefers them (RFC 6724), each once."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class AddressGuard:
    """Refuses loopback, private, link-local, multicast and reserved addresses unless allowed.

    ``allowed`` None allows everything; otherwise a list of networks exempt from the rule.
    """

    def __init__(self, allowed: list[Network] | None, resolve: Resolver = _resolve) -> None:
        self.allowed = allowed
        self.resolve = resolve

    def permits(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if self.allowed is None or ip.is_global:
            return True
        return any(ip.version == net.version and ip in net for net in self.allowed)

    async def check(self, url: str) -> None:
        """Resolve the URL's host and raise AddressRefused if any of its addresses is not permitted."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise FetchError(url, "invalid", f"not a usable URL: {e}") from e
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(url, "invalid", "only http(s) URLs with a host can be fetched")
        await self.vetted_addresses(parts.hostname, port or (443 if parts.scheme == "https" else 80), url=url)

    async def vetted_addresses(self, host: str, port: int, *, url: str | None = None) -> list[str]:
        """Every address of ``host``, in the order to try them, after checking each of them."""
        try:
            addresses = [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            try:
                addresses = await self.resolve(host, port)
            except (socket.gaierror, UnicodeError) as e:
                reason = e.strerror if isinstance(e, socket.gaierror) else str(e)
                raise FetchError(url or host, "network", f"cannot resolve {host}: {reason}") from e
        refused = [a for a in addresses if not self.permits(a)]
        if refused or not addresses:
            raise AddressRefused(
                url or host,
                f"{host} resolves to non-public address {refused[0] if refused else 'none'} "
                "(set MONITOR_ALLOW_PRIVATE_ADDRESSES to allow it)",
            )
        return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the guard vetted in the same step, so a DNS answer that changes
    between the check and the connection (DNS rebinding) cannot slip a private address through.
    Each vetted address is tried in turn. TLS still verifies the certificate against the host name:
    httpcore passes it separately."""

    def __init__(self, guard: AddressGuard) -> None:
        self.guard = guard
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self.guard.vetted_addresses(host, port):  # dual-stack sites on IPv4-only networks
            try:
                stream = await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                failure = e
                continue
            return _Stream(stream)
        assert failure is not None  # vetted_addresses never returns an empty list
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused(path, "unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """An anyio stream whose "is readable" check is cheap. httpcore asks it of every pooled connection
    each time it assigns a request; anyio answers by rebuilding its attribute table, peer-name lookup
    included, which made the pool scan the largest cost of a fetch."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self.inner = inner
        self._socket = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self.inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # the socket under TLS too: what httpcore's anyio stream checks
            return _readable(self._socket)
        return self.inner.get_extra_info(info)


def _readable(sock: socket.socket | None) -> bool:
    """Data or end of stream waiting: on an idle keep-alive connection, the server has closed it."""
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class HostBudget:
    """Politeness: at most ``concurrency`` requests per host at once, request starts spaced by ``min_interval``.

    ``acquire``/``release`` hold the concurrency caps (per host and global) around a whole request;
    ``space`` runs from httpcore's trace hook, right before the request is written on its connection,
    so the spacing holds on the wire even when the process is busy.
    """

    def __init__(self, min_interval: float, concurrency: int, global_concurrency: int) -> None:
        self.min_interval = min_interval
        self._global = asyncio.Semaphore(global_concurrency)
        self._per_host: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(concurrency))
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._last_start: dict[str, float] = {}

    async def acquire(self, host: str) -> None:
        await self._per_host[host].acquire()
        await self._global.acquire()

    def release(self, host: str) -> None:
        self._global.release()
        self._per_host[host].release()

    async def space(self, host: str) -> None:
        async with self._locks[host]:
            wait = self._last_start.get(host, -math.inf) + self.min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_start[host] = time.monotonic()


@dataclass
class Response:
    url: str  # final URL after redirects
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def content_type(self) -> str:
        return str(self.headers.get("content-type", "")).split(";", 1)[0].strip().lower()

    def text(self) -> str:
        """Decoded body with French accents intact even when the declared charset is missing or wrong.

        Strict UTF-8 first (it almost never decodes other encodings by accident), then the declared
        and <meta> charsets, then windows-1252; latin-1 labels mean windows-1252, as in browsers.
        """
        declared = httpx.Response(200, headers=self.headers).charset_encoding
        meta = re.search(rb"""<meta[^>]+charset=["']?([\w-]+)""", self.body[:4096], re.I)
        candidates = ["utf-8", declared, meta.group(1).decode("ascii", "ignore") if meta else None]
        for encoding in candidates:
            if not encoding:
                continue
            if encoding.lower().replace("_", "-") in ("iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii"):
                encoding = "windows-1252"
            try:
                return self.body.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                continue
        return self.body.decode("windows-1252", errors="replace")


class Fetcher:
    """One shared httpx client for the whole process; use as an async context manager."""

    def __init__(self, settings: Settings, resolve: Resolver = _resolve) -> None:
        self.settings = settings
        self.guard = AddressGuard(settings.allowed_networks(), resolve)
        self.budget = HostBudget(settings.host_min_interval, settings.host_concurrency, settings.global_concurrency)
        # Keep-alive limit = connection limit: httpcore 1.0 closes "surplus" idle connections by counting all
        # of them, which can close one just handed to a request (encode/httpcore#1110).
        connections = settings.global_concurrency * 2
        transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections), retries=0
        )
        transport._pool._network_backend = _GuardedBackend(self.guard)  # no public hook for the backend
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            headers={
                "User-Agent": settings.user_agent,
                "Accept-Language": "fr,en;q=0.5",
                "Accept-Encoding": "gzip, deflate",
            },
        )

    async def _trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore reports each step of a request here. Spacing waits at the last moment before the
        request line is written on its connection (after the pool and any connect), so it holds on the
        wire and not only where the request was queued."""
        if event == "http11.send_request_headers.started":
            await self.budget.space(info["request"].url.host.decode("ascii"))

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def get(self, url: str, *, accept: Iterable[str], headers: dict[str, str] | None = None) -> Response:
        """GET with redirects checked hop by hop; raise FetchError for anything but 2xx/304."""
        current = url
        for _hop in range(self.settings.max_redirects + 1):
            try:
                await self.guard.check(current)
            except AddressRefused as e:
                if current == url:
                    raise
                raise AddressRefused(current, f"{e.reason} (redirected from {url})") from e
            host = urlsplit(current).hostname or ""
            await self.budget.acquire(host)
            try:
                async with asyncio.timeout(self.settings.request_deadline):
                    response = await self._get_once(current, headers or {})
            except TimeoutError as e:  # a slow drip that never trips the read timeout
                raise FetchError(
                    current, "timeout", f"no complete answer in {self.settings.request_deadline:g} s"
                ) from e
            finally:
                self.budget.release(host)
            if response.status in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise FetchError(
                        current, "http", f"redirect {response.status} without Location", status=response.status
                    )
                try:
                    target = urljoin(current, location)
                except ValueError:
                    target = location
                refused = canonical_url(target)
                if isinstance(refused, RefusedURL):
                    raise FetchError(current, "invalid", f"redirect to an {refused}", status=response.status)
                current = target
                continue
            if response.status == 304:
                return response
            if not 200 <= response.status < 300:
                raise FetchError(
                    current,
                    "http",
                    f"HTTP {response.status}",
                    status=response.status,
                    retry_after=retry_after_seconds(response.headers.get("retry-after")),
                )
            allowed = tuple(accept)
            if response.content_type and not any(kind in response.content_type for kind in allowed):
                raise FetchError(current, "content_type", f"unexpected content type {response.content_type!r}")
            return response
        raise FetchError(url, "redirects", f"more than {self.settings.max_redirects} redirects")

    async def _get_once(self, url: str, headers: dict[str, str]) -> Response:
        limit = self.settings.max_body_bytes
        try:
            async with self._client.stream("GET", url, headers=headers, extensions={"trace": self._trace}) as stream:
                declared = stream.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit and stream.status_code < 300:
                    raise FetchError(url, "too_large", f"Content-Length {declared} exceeds {limit} bytes")
                body = b""
                if 200 <= stream.status_code < 300:
                    body = await _bounded_body(url, stream, limit)
                return Response(str(stream.url), stream.status_code, stream.headers, body)
        except httpx.TimeoutException as e:
            raise FetchError(url, "timeout", f"{type(e).__name__}") from e
        except httpx.ConnectError as e:
            kind = "tls" if "SSL" in str(e) or "certificate" in str(e).lower() else "network"
            raise FetchError(url, kind, str(e) or type(e).__name__) from e
        except httpx.HTTPError as e:
            raise FetchError(url, "network", str(e) or type(e).__name__) from e
        except (httpx.InvalidURL, UnicodeError) as e:  # neither is an HTTPError
            raise FetchError(url, "invalid", f"not a usable URL: {e}") from e


async def _bounded_body(url: str, stream: httpx.Response, limit: int) -> bytes:
    """The decoded body, stopped as soon as it passes ``limit`` bytes, compressed or not.

    Decompression is done here with ``max_length`` so a gzip bomb never inflates past the limit in
    memory (a library decoder inflates each received chunk whole).
    """
    encoding = stream.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
        raise FetchError(url, "content_type", f"unsupported Content-Encoding {encoding!r}")
    inflater = zlib.decompressobj(47) if encoding not in ("identity", "") else None  # 47: gzip or zlib header
    chunks: list[bytes] = []
    size = 0
    async for raw in stream.aiter_raw():
        pending = raw
        while pending:
            if inflater is None:
                piece, pending = pending, b""
            else:
                try:
                    piece = inflater.decompress(pending, limit + 1 - size)
                except zlib.error as e:
                    raise FetchError(url, "network", f"corrupt {encoding} body: {e}") from e
                pending = inflater.unconsumed_tail
            size += len(piece)
            if size > limit:
                raise FetchError(url, "too_large", f"body exceeds {limit} bytes once decoded")
            chunks.append(piece)
            if inflater is not None and not piece and pending:
                break
    return b"".join(chunks)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def max_age_seconds(cache_control: str | None) -> float | None:
    match = re.search(r"max-age\s*=\s*(\d+)", cache_control or "", re.I)
    return float(match.group(1)) if match else None


class RobotsCache:
    """robots.txt per host, fetched through the same guarded, polite fetcher, kept for a day.

    As search engines do: a missing robots.txt (4xx) allows everything; an unreachable one (5xx,
    network) is treated as a temporary "not now", so the article is retried later.
    """

    TTL = timedelta(hours=24)

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._rules: dict[str, tuple[datetime, RobotFileParser]] = {}
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        async with self._locks[origin]:
            cached = self._rules.get(origin)
            if cached is None or datetime.now(UTC) - cached[0] > self.TTL:
                cached = (datetime.now(UTC), await self._load(origin))
                self._rules[origin] = cached
        return cached[1].can_fetch(self.fetcher.settings.user_agent, url)

    async def _load(self, origin: str) -> RobotFileParser:
        parser = RobotFileParser(origin + "/robots.txt")
        try:
            response = await self.fetcher.get(origin + "/robots.txt", accept=("text/", "application/octet-stream"))
        except FetchError as e:
            if e.status is not None and 400 <= e.status < 500:
                parser.parse([])
                return parser
            raise FetchError(origin + "/robots.txt", e.kind, f"robots.txt unavailable: {e}", status=e.status) from e
        parser.parse(response.text().splitlines())
        return parser


@dataclass(frozen=True)
class FeedEntry:
    guid: str
    url: str | None
    title: str | None
    published_at: datetime | None
    error: str | None = None  # an item that cannot be fetched (its link is unusable): recorded as failed


@dataclass
class ParsedFeed:
    entries: list[FeedEntry] = field(default_factory=list)
    title: str | None = None
    ttl_minutes: int | None = None
    warning: str | None = None  # a bozo feed that still had items

    @property
    def refused(self) -> list[FeedEntry]:
        return [entry for entry in self.entries if entry.error]


_CHALLENGE = re.compile(rb"cf-challenge|challenge-platform|just a moment\.\.\.|captcha|attention required", re.I)


def parse_feed(url: str, response: Response, *, max_items: int, now: datetime) -> ParsedFeed:
    """Entries of an RSS/Atom body; FeedError when the body is not a feed at all.

    The body goes to feedparser as a stream: given bytes that look like a path or a URL, feedparser
    would open that file or fetch that address itself."""
    try:
        parsed: Any = feedparser.parse(
            io.BytesIO(response.body), response_headers={"content-type": response.headers.get("content-type", "")}
        )
    except Exception as e:  # feedparser's own guard is bozo; anything escaping it is a parse failure too
        raise FeedError(url, "parse", f"not a parseable feed: {type(e).__name__}: {e}") from e
    head = response.body[:2048].lstrip().lower()
    if not parsed.entries:
        if _CHALLENGE.search(response.body[:20000]):
            raise FeedError(url, "challenge", "a bot-challenge page was served instead of the feed")
        if head.startswith((b"<!doctype html", b"<html")) or "html" in response.content_type:
            raise FeedError(url, "not_a_feed", "an HTML page was served instead of a feed")
        if parsed.bozo and not parsed.version:
            raise FeedError(url, "parse", f"not a parseable feed: {parsed.bozo_exception}")
    entries: list[FeedEntry] = []
    seen: set[tuple[str, str | None]] = set()
    for raw in parsed.entries[:max_items]:
        entry = _entry(response.url, raw, now)
        if (entry.guid, entry.url) not in seen:  # a GUID repeated with another link is another article
            seen.add((entry.guid, entry.url))
            entries.append(entry)
    ttl = parsed.feed.get("ttl")
    return ParsedFeed(
        entries=entries,
        title=parsed.feed.get("title"),
        ttl_minutes=int(ttl) if isinstance(ttl, str) and ttl.isdigit() else None,
        warning=f"malformed feed, items used anyway: {parsed.bozo_exception}" if parsed.bozo else None,
    )


def _entry(base: str, raw: Any, now: datetime) -> FeedEntry:
    """One item; an unusable link makes it an entry with an error, never an exception."""
    link = raw.get("link")
    title = clip(str(raw["title"]), MAX_TITLE_CHARS) if raw.get("title") else None
    error = None
    url: str | None = None
    if link:
        try:
            absolute = urljoin(base, str(link))
        except ValueError:
            absolute = str(link)
        canonical = canonical_url(absolute)
        if isinstance(canonical, RefusedURL):
            url, error = clip(absolute.strip(), MAX_URL_CHARS), str(canonical)
        else:
            url = canonical
    guid = str(raw.get("id") or url or _digest(str(raw.get("title", "")), str(raw.get("summary", ""))))
    return FeedEntry(guid=guid[:MAX_URL_CHARS], url=url, title=title, published_at=_entry_time(raw, now), error=error)


def _entry_time(raw: Any, now: datetime) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = raw.get(key)
        if value:
            try:
                moment = datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
            except (OverflowError, ValueError, TypeError):
                continue
            # A date far in the future is a publisher's mistake, not a scheduling hint.
            return min(moment, now + timedelta(hours=1))
    return None


def _digest(*parts: str) -> str:
    return "sha1:" + hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
