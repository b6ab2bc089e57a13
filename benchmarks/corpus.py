"""What the benchmarks and the tests both build on: the real data in tests/data, realistic outlet pages
and feeds around it, and a real HTTP server on a loopback address."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"  # real text nobody on the team wrote; see its README.md


SEEDS = DATA / "seeds"


RPM2 = DATA / "rpm2-dev" / "rpm2-dev.jsonl"


FEEDS_FR = DATA / "feeds-fr"


@dataclass(frozen=True)
class Seed:
    name: str  # "000"
    title: str
    body: str
    published: str  # YYYY-MM-DD
    story: str


def seed_title(text: str) -> str:
    """A headline for a seed: its first line when it reads like one, else its first words."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = re.sub(r"^date \d{4}-\d{2}\s+", "", lines[0])
    if len(first) <= 120:
        return first
    return " ".join(first.split()[:14]).rstrip(",;:")


MIN_UNITS = 8  # fewer paragraphs than this: an article is cut into sentences instead


_SENTENCE = re.compile(r"(?<=[.!?»])\s+(?=[A-ZÀ-ÖØ-Þ«\"“])")


def text_units(body: str) -> list[str]:
    """An article's paragraphs; its sentences when it has too few paragraphs to vary or cut."""
    paragraphs = [p.strip() for p in body.splitlines() if p.strip()]
    if len(paragraphs) >= MIN_UNITS:
        return paragraphs
    return [s.strip() for p in paragraphs for s in _SENTENCE.split(p) if s.strip()]


def seeds() -> list[Seed]:
    labels = json.loads((SEEDS / "labels.json").read_text(encoding="utf-8"))["articles"]
    result = []
    for path in sorted(SEEDS.glob("00*.txt")):
        text = path.read_text(encoding="utf-8")
        label = labels[path.name]
        result.append(Seed(path.name[:3], seed_title(text), text.strip(), label["published"], label["story"]))
    return result


def reprints(topics: list[str], per_topic: int) -> list[dict[str, str]]:
    """Per rpm2-dev topic, its first article as ``per_topic`` outlets reprint it: cut to 70 % and more of
    its words, each with its own headline and note. Which reprint comes first decides which is stored as
    the original; grouping must not depend on it."""
    rows = [json.loads(line) for line in RPM2.read_text(encoding="utf-8").splitlines() if line.strip()]
    articles = []
    for g, story in enumerate(topics):
        base = next(r for r in rows if r["story"] == story)
        words = base["text"].split()
        for k in range(per_topic):
            body = " ".join(words[: int(len(words) * (0.70 + k / 100))])
            articles.append(
                {
                    "group": str(g),
                    "title": f"{base['title']} ({k})",
                    "body": f"{body}\nMise à jour numéro {k} de la rédaction.",
                }
            )
    return articles


def article_page(
    *, title: str, body: str, site: str, url: str, published: str, lang: str = "fr", charset: str = "utf-8"
) -> str:
    """A news page as outlets serve it: menus, share bar, related links, comments and footer around the text."""
    paragraphs = "\n".join(f"<p>{html.escape(p.strip())}</p>" for p in body.splitlines() if p.strip())
    related = "\n".join(
        f'<li><a href="/actu/{i}.html">Les dix smartphones les plus attendus de l\'année, épisode {i}</a></li>'
        for i in range(1, 7)
    )
    return f"""<!DOCTYPE html>
<html lang="{lang}"><head><meta charset="{charset}">
<title>{html.escape(title)} - {site}</title>
<link rel="canonical" href="{url}">
<meta property="og:site_name" content="{site}">
<meta property="article:published_time" content="{published}T08:00:00+01:00">
</head><body>
<header><nav class="menu"><ul><li><a href="/">Accueil</a></li><li><a href="/tech">Tech</a></li>
<li><a href="/mobiles">Smartphones</a></li><li><a href="/jeux">Jeux vidéo</a></li><li><a href="/abonnement">S'abonner à la newsletter</a></li></ul></nav>
<div class="cookie-banner">Nous utilisons des cookies pour améliorer votre expérience de navigation. Accepter et fermer.</div></header>
<main><article>
<h1>{html.escape(title)}</h1>
<div class="byline">Par <span class="author">Camille Durand</span> — publié le {published}</div>
<div class="share">Partager sur Facebook · Partager sur X · Copier le lien</div>
<div class="article-body">
{paragraphs}
</div>
</article>
<aside class="related"><h2>À lire aussi</h2><ul>
{related}
</ul></aside>
<section id="comments"><h2>Commentaires</h2>
<div class="comment"><p>Super article, merci ! Vivement la suite de ce dossier passionnant sur les promotions du Black Friday.</p></div>
<div class="comment"><p>Je ne suis pas d'accord avec la conclusion, mon vieux téléphone marche encore très bien.</p></div>
</section></main>
<footer><p>© 2024 {site} — Tous droits réservés. Mentions légales · Politique de confidentialité · Gestion des cookies · Nous contacter</p></footer>
</body></html>"""


def rss(title: str, link: str, items: list[dict[str, Any]]) -> str:
    entries = "\n".join(
        f"""<item><title>{html.escape(i["title"])}</title><link>{html.escape(i["link"])}</link>
<guid isPermaLink="true">{html.escape(i["link"])}</guid>
<pubDate>{format_datetime(i["published"]) if isinstance(i["published"], datetime) else i["published"]}</pubDate>
<description>{html.escape(i.get("summary", ""))}</description></item>"""
        for i in items
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>{html.escape(title)}</title><link>{link}</link>
<description>Flux de test</description><language>fr</language>
{entries}
</channel></rss>"""


Reply = tuple[int, dict[str, str], bytes]


# A route is a fixed reply, or a function of the request giving one, or None when it answered by itself.
Route = Reply | Callable[[BaseHTTPRequestHandler], Reply | None]


class LoopbackServer:
    """A real HTTP server on a loopback address (127.0.0.x), serving fixed routes; records every request."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.starts: list[float] = []  # monotonic start time of every request
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                started = time.monotonic()
                server.requests.append((self.path, dict(self.headers)))
                with server.lock:
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                    server.starts.append(started)
                try:
                    self._answer()
                finally:
                    with server.lock:
                        server.active -= 1

            def _answer(self) -> None:
                route = server.routes.get(self.path)
                if route is None:
                    status, headers, body = 404, {"Content-Type": "text/plain"}, b"not found"
                elif callable(route):
                    reply = route(self)
                    if reply is None:
                        return
                    status, headers, body = reply
                else:
                    status, headers, body = route
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]  # clients hang up on purpose
        self.host = host
        self.port = self.httpd.server_address[1]
        # A short poll: shutdown() waits for it, and a test stops many servers.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add(
        self,
        path: str,
        body: str | bytes,
        content_type: str = "text/html; charset=utf-8",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> str:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.routes[path] = (status, {"Content-Type": content_type, **(headers or {})}, data)
        return self.base + path

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
