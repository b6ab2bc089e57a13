"""Canonical article URLs: the identity that makes one article one row across feeds and fetches.

A URL from a feed or a page is untrusted text. ``canonical_url`` never raises: what it cannot make
canonical (no http(s) scheme, no host, a port out of range, a broken IPv6 literal, a control character,
too long for the schema) comes back as ``RefusedURL`` with the reason, to be recorded against the item
it came with.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import tld
from courlan.filters import is_navigation_page

from monitor.limits import CONTROL, MAX_URL_CHARS

_TRACKING_PREFIXES = ("utm_", "at_", "pk_", "mtm_", "xtor", "ns_")
_TRACKING_NAMES = {
    "fbclid",
    "gclid",
    "dclid",
    "msclkid",
    "mc_cid",
    "mc_eid",
    "igshid",
    "yclid",
    "_ga",
    "ref_src",
    "cmpid",
    "xtref",
    "twclid",
    "wt.mc_id",
    "oly_enc_id",
    "oly_anon_id",
}


@dataclass(frozen=True)
class RefusedURL:
    """A URL that cannot name an article, and why."""

    url: str
    reason: str

    def __str__(self) -> str:
        shown = self.url if len(self.url) <= 120 else self.url[:120] + "…"
        return f"invalid URL {shown!r}: {self.reason}"


def canonical_url(url: str) -> str | RefusedURL:
    """Lower-cased scheme and host, no default port, no fragment, no tracking parameters; IPv6 literals
    keep their brackets. A URL that cannot be made canonical is refused with the reason."""
    control = CONTROL.search(url.strip())
    if control:  # urlsplit drops tabs and line breaks and keeps NUL, which PostgreSQL cannot store
        return RefusedURL(url, f"control character {control.group()!r} in it")
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            return RefusedURL(url, f"scheme {scheme or 'missing'!r} is not http(s)")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            return RefusedURL(url, "no host")
        port = parts.port
        if parts.netloc.rpartition("@")[2].startswith("[") and ":" not in host:  # [v1.fe], brackets dropped
            return RefusedURL(url, f"IPvFuture address [{host}] cannot be connected to")
        if ":" in host:  # an IPv6 literal: urlsplit has dropped its brackets
            host = f"[{ipaddress.IPv6Address(host.split('%', 1)[0]).compressed}]"
        elif any(c.isspace() or c in '<>"\\^`{|}' for c in host):
            return RefusedURL(url, f"host {host!r} has characters no host name has")
        netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)]
        canonical = urlunsplit((scheme, netloc, parts.path or "/", urlencode(query), ""))
    except ValueError as e:  # "Port out of range", "Invalid IPv6 URL", a bad IPv6 address, ...
        return RefusedURL(url, str(e) or type(e).__name__)
    if len(canonical) > MAX_URL_CHARS:
        return RefusedURL(url, f"longer than {MAX_URL_CHARS} characters")
    return canonical


def absolute_url(link: str, base: str) -> str:
    """``link`` resolved against ``base``; as it came when it has a control character (urljoin would drop
    a tab or a line break, hiding it from ``canonical_url``) or cannot be resolved (a broken IPv6 literal)."""
    if CONTROL.search(link.strip()):
        return link
    try:
        return urljoin(base, link)
    except ValueError:
        return link


def quoted_controls(url: str) -> str:
    """``url`` with its control characters percent-encoded, as a browser writes them: a refused URL is
    recorded as it came, in a form the database can hold."""
    return CONTROL.sub(lambda c: f"%{ord(c.group()):02X}", url)


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in _TRACKING_NAMES or lowered.startswith(_TRACKING_PREFIXES)


def host_of(url: str) -> str:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
    return host[4:] if host.startswith("www.") else host


def site_of(url: str) -> str:
    """The registrable domain (numerama.com for www.numerama.com), or the host itself for an IP or a
    local name: two pages are on one site when these agree."""
    host = host_of(url)
    return str(tld.get_fld(host, fix_protocol=True, fail_silently=True) or host)


def canonical_link_refusal(declared: str, page_url: str) -> str | None:
    """Why a page's declared canonical link should not replace its own URL, or None to use it.

    A canonical link is evidence, not an order: one on another site, or naming the site's home page or a
    section of it, would file the article under a URL that other articles share."""
    if site_of(declared) != site_of(page_url):
        return f"canonical link {declared} is on another site"
    path = urlsplit(declared).path
    if path.strip("/") == "":
        return f"canonical link {declared} is the site's home page"
    own = urlsplit(page_url).path
    if (own != path and own.startswith(path.rstrip("/") + "/")) or is_navigation_page(declared):
        return f"canonical link {declared} is a section page"
    return None
