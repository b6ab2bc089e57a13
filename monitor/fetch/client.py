"""HTTP fetching of feeds and article pages: polite, bounded, and refusing private addresses.

Every request goes through ``Fetcher.get``: one budget per host (minimum spacing and a
concurrency cap) shared by feed and article requests, a global cap, redirects followed by
hand so each hop is checked by the address guard *before* any connection is opened, and a
body-size limit enforced while streaming (decoded bytes, so a gzip bomb stops early too)."""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from monitor.config import Settings
from monitor.errors import AddressRefused, FetchError
from monitor.fetch.guard import AddressGuard, Resolver, _GuardedBackend, _resolve
from monitor.fetch.politeness import HostBudget, retry_after_seconds
from monitor.fetch.urls import RefusedURL, absolute_url, canonical_url

FEED_TYPES = ("xml", "rss", "atom", "rdf", "text/html", "text/plain", "application/octet-stream")


PAGE_TYPES = ("text/html", "application/xhtml+xml", "text/plain")


_REDIRECTS = {301, 302, 303, 307, 308}


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
                target = absolute_url(location, current)
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
