"""The address guard: loopback, private and reserved addresses refused after resolution and again at
connect time (DNS rebinding), each vetted address of a host tried in turn."""

from __future__ import annotations

import asyncio
import ipaddress
import select
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore

from monitor.config import Network
from monitor.errors import AddressRefused, FetchError

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
