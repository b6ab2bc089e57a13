"""Fetching against real loopback servers: the address guard, limits, charsets, feeds that are not feeds."""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import UTC, datetime

import pytest

from benchmarks.corpus import FEEDS_FR, LoopbackServer
from monitor.config import Settings
from monitor.errors import AddressRefused, FeedError, FetchError
from monitor.fetch.client import FEED_TYPES, PAGE_TYPES, Fetcher
from monitor.fetch.feeds import parse_feed
from monitor.fetch.urls import canonical_url


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"allow_private_addresses": "127.0.0.0/8", "host_min_interval": 0.0, **overrides}
    return Settings(**values)  # type: ignore[arg-type]


async def _get(settings: Settings, url: str, accept: tuple[str, ...] = PAGE_TYPES):  # type: ignore[no-untyped-def]
    async with Fetcher(settings) as fetcher:
        return await fetcher.get(url, accept=accept)


def test_redirect_to_a_private_address_is_refused_before_connecting() -> None:
    with LoopbackServer("127.0.0.2") as server:
        server.add("/go", b"", status=302, headers={"Location": "http://10.20.30.40/internal"})
        with pytest.raises(AddressRefused, match=r"10\.20\.30\.40"):
            asyncio.run(_get(_settings(), server.base + "/go"))
        assert [path for path, _ in server.requests] == ["/go"]


def test_dns_answer_pointing_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DNS server runs here, so the resolver's answer is the one stand-in; no socket is ever opened."""

    async def fake_getaddrinfo(self, host, port, **kwargs):  # type: ignore[no-untyped-def]
        assert host == "intranet.example.fr"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.10", port))]

    opened: list[object] = []
    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: opened.append(addr))
    with pytest.raises(AddressRefused, match=r"192\.168\.1\.10"):
        asyncio.run(_get(_settings(), "https://intranet.example.fr/feed"))
    assert opened == []


def test_dns_rebinding_between_check_and_connect_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The name first resolves to the (allowed) loopback server, then to a private address: the connection
    is made only to an address vetted at connect time, so the second answer is refused, never dialled."""
    with LoopbackServer("127.0.0.46") as server:
        server.add("/feed", "<rss></rss>", "application/rss+xml")
        answers = ["127.0.0.46", "10.9.8.7"]
        real = asyncio.BaseEventLoop.getaddrinfo

        async def rebinding(self, host, port, **kwargs):  # type: ignore[no-untyped-def]
            if host != "rebind.example.fr":
                return await real(self, host, port, **kwargs)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers.pop(0), port))]

        dialled: list[object] = []
        real_connect = socket.socket.connect

        def recording_connect(self, address):  # type: ignore[no-untyped-def]
            dialled.append(address)
            return real_connect(self, address)

        monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", rebinding)
        monkeypatch.setattr(socket.socket, "connect", recording_connect)
        with pytest.raises(AddressRefused, match=r"10\.9\.8\.7"):
            asyncio.run(_get(_settings(), f"http://rebind.example.fr:{server.port}/feed", FEED_TYPES))
        assert answers == [] and not [a for a in dialled if str(a).startswith("('10.")]
        assert server.requests == []


def test_loopback_refused_unless_allowed() -> None:
    with LoopbackServer("127.0.0.3") as server:
        url = server.add("/page", "<html><body>x</body></html>")
        with pytest.raises(AddressRefused):
            asyncio.run(_get(_settings(allow_private_addresses="false"), url))
        with pytest.raises(AddressRefused):  # allowed networks that do not cover it
            asyncio.run(_get(_settings(allow_private_addresses="10.0.0.0/8"), url))
        assert server.requests == []
        assert asyncio.run(_get(_settings(allow_private_addresses="true"), url)).status == 200


def test_limits_body_size_redirect_loops_and_content_type() -> None:
    with LoopbackServer("127.0.0.4") as server:
        big = server.add("/big", b"<html>" + b"a" * 300_000)
        loop = server.add("/loop", b"", status=301, headers={"Location": "/loop"})
        pdf = server.add("/doc.pdf", b"%PDF-1.4", content_type="application/pdf")
        with pytest.raises(FetchError) as too_large:
            asyncio.run(_get(_settings(max_body_bytes=100_000), big))
        assert too_large.value.kind == "too_large"
        with pytest.raises(FetchError) as redirects:
            asyncio.run(_get(_settings(max_redirects=3), loop))
        assert redirects.value.kind == "redirects" and len(server.requests) == 1 + (1 + 3)
        with pytest.raises(FetchError) as wrong_type:
            asyncio.run(_get(_settings(), pdf))
        assert wrong_type.value.kind == "content_type"


@pytest.mark.parametrize("declared", ["", "; charset=utf-8", "; charset=iso-8859-1"])
def test_windows_1252_pages_keep_their_accents(declared: str) -> None:
    page = "<html><head><title>Été</title></head><body><p>L’été à Paris : « déjà » 5 €</p></body></html>"
    with LoopbackServer("127.0.0.5") as server:
        url = server.add("/p", page.encode("windows-1252"), content_type=f"text/html{declared}")
        text = asyncio.run(_get(_settings(), url)).text()
    assert "L’été à Paris : « déjà » 5 €" in text


def test_html_and_challenge_pages_are_not_feeds() -> None:
    now = datetime.now(UTC)
    with LoopbackServer("127.0.0.6") as server:
        html = server.add("/feed", "<!DOCTYPE html><html><body><h1>Bienvenue</h1></body></html>")
        challenge = server.add(
            "/rss",
            "<html><head><title>Just a moment...</title></head><body><div id='cf-challenge'></div></body></html>",
        )
        for url, kind in ((html, "not_a_feed"), (challenge, "challenge")):
            response = asyncio.run(_get(_settings(), url, FEED_TYPES))
            with pytest.raises(FeedError) as info:
                parse_feed(url, response, max_items=100, now=now)
            assert info.value.kind == kind and info.value.url == url


def test_real_feeds_parse_with_dates_and_canonical_links() -> None:
    now = datetime.now(UTC)
    with LoopbackServer("127.0.0.7") as server:
        path = FEEDS_FR / "le-figaro-tech-web.xml"
        url = server.add("/tech.xml", path.read_bytes(), content_type="application/rss+xml")
        parsed = parse_feed(url, asyncio.run(_get(_settings(), url, FEED_TYPES)), max_items=500, now=now)
        capped = parse_feed(url, asyncio.run(_get(_settings(), url, FEED_TYPES)), max_items=5, now=now)
    assert len(parsed.entries) >= 10 and len(capped.entries) == 5
    assert all(e.url and e.url.startswith("https://www.lefigaro.fr/") for e in parsed.entries)
    assert all(e.published_at is not None and e.published_at.year == 2025 for e in parsed.entries)
    assert len({e.guid for e in parsed.entries}) == len(parsed.entries)


def test_canonical_url() -> None:
    assert (
        canonical_url("HTTPS://WWW.Numerama.com:443/tech/123-x.html?utm_source=rss&id=4&fbclid=abc#comments")
        == "https://www.numerama.com/tech/123-x.html?id=4"
    )
    assert canonical_url("http://next.ink") == "http://next.ink/"
    assert canonical_url("http://127.0.0.2:8080/a?gclid=1") == "http://127.0.0.2:8080/a"


def test_connection_closed_by_the_server_while_idle_is_not_reused() -> None:
    """A server that drops each keep-alive connection after its answer: the pool must see the idle socket
    readable (end of stream) and open a new connection, not send the next request into a dead one."""
    listener = socket.create_server(("127.0.0.47", 0))
    port = listener.getsockname()[1]
    connections: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(conn)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            body = b"<html><body><p>ok</p></body></html>"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: keep-alive\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            conn.close()

    async def twice() -> list[int]:
        async with Fetcher(_settings()) as fetcher:
            first = await fetcher.get(f"http://127.0.0.47:{port}/a", accept=PAGE_TYPES)
            await asyncio.sleep(0.2)  # the server's FIN has arrived on the idle pooled connection
            second = await fetcher.get(f"http://127.0.0.47:{port}/b", accept=PAGE_TYPES)
            return [first.status, second.status]

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        assert asyncio.run(twice()) == [200, 200]
        assert len(connections) == 2
    finally:
        listener.close()
