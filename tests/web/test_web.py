"""The pages of `monitor web` in a real headless Chromium against the real server, on SQLite and PostgreSQL.

Chromium (Debian's ``chromium``: ``apt-get install -y chromium``) is started once per test process and
driven through Playwright; it loads each page in turn in one tab, and each must render without a single
console message (a CSP violation or a script error would log one); assertions read the DOM it renders.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

from tests.support import CHROMIUM, XSS_TITLE, serving

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file() and not os.environ.get("CI"),  # in CI, a missing browser fails the tests
    reason="needs chromium (apt-get install -y chromium)",
)
PHONE: ViewportSize = {"width": 390, "height": 900}
DESKTOP: ViewportSize = {"width": 1280, "height": 720}  # Playwright's default
LOAD_FAILED = "Failed to load resource"  # Chromium's message for a response with an error status


@dataclass
class Chromium:
    """One Chromium tab for the test process, each page loaded in turn (a browser, or a tab, opened per page
    cost Chromium more than rendering it), driven from a thread of its own: Playwright's sync API keeps an
    event loop running in the thread that uses it, and the commands these tests run in-process start their
    own (asyncio.run)."""

    thread: ThreadPoolExecutor
    page: Page
    console: list[tuple[str, str]]  # (message, the URL it came from)

    def dom(self, url: str, *, screenshot: Path | None = None) -> str:
        """The DOM Chromium builds for the page (and a screenshot at a phone's size when asked); fails on any
        console message or script error, a resource the page asks for and does not get included (the
        favicon, once: the tab keeps it)."""
        return self.thread.submit(self._load, url, screenshot).result()

    def _load(self, url: str, screenshot: Path | None) -> str:
        self.console.clear()
        self.page.set_viewport_size(PHONE if screenshot else DESKTOP)
        self.page.goto(url, wait_until="load")
        if screenshot:
            self.page.screenshot(path=screenshot)
        dom = self.page.content()
        self.page.goto("about:blank")  # the page's late messages are told apart from the next one's
        # The page's own error status (404, 422) is its answer, not a message to fail on.
        assert [m for m, source in self.console if source != url or LOAD_FAILED not in m] == [], (url, self.console)
        return dom


def _tab(thread: ThreadPoolExecutor, browser: Browser) -> Chromium:
    """The tab, with what it logs listened to (from the thread Playwright runs in)."""
    page = browser.new_page()
    console: list[tuple[str, str]] = []
    page.on("console", lambda m: console.append((f"{m.type}: {m.text}", m.location.get("url", ""))))
    page.on("pageerror", lambda error: console.append((f"error: {error}", "")))
    return Chromium(thread, page, console)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    with ThreadPoolExecutor(1, thread_name_prefix="chromium") as thread:
        playwright = thread.submit(lambda: sync_playwright().start()).result()
        args = ["--no-sandbox", "--disable-gpu", "--disable-quic"]
        browser = thread.submit(playwright.chromium.launch, executable_path=CHROMIUM, args=args).result()
        try:
            yield thread.submit(_tab, thread, browser).result()
        finally:
            thread.submit(browser.close).result()
            thread.submit(playwright.stop).result()


@pytest.fixture
def browse(chromium: Chromium) -> Callable[..., str]:
    return chromium.dom


def links(dom: str) -> list[tuple[str, str]]:
    return [
        (href, html.unescape(re.sub(r"<[^>]+>", "", text)))
        for href, text in re.findall(r'<a[^>]*href="([^"]+)"[^>]*>(.*?)</a>', dom, re.S)
    ]


@pytest.fixture
def site(seeded_desk: tuple[str, dict[str, str], dict[str, int]]) -> tuple[str, dict[str, int]]:
    base, _env, stories = seeded_desk
    return base, stories


def test_stories_page_lists_the_seed_stories_and_filters_narrow_it(
    site: tuple[str, dict[str, int]], browse: Callable[..., str]
) -> None:
    base, story = site
    dom = browse(f"{base}/")
    listed = [int(n) for n in re.findall(r'data-story="(\d+)"', dom)]
    assert listed[0] == story["000"] and story["004"] in listed and len(listed) == 3
    assert "3 sujets" in dom and "4 médias" in dom
    assert 'lang="fr"' in dom and "Europe/Paris" in dom

    narrowed = browse(f"{base}/?min_outlets=2")
    assert [int(n) for n in re.findall(r'data-story="(\d+)"', narrowed)] == [story["000"]]
    assert "1 sujet correspond aux filtres" in narrowed
    by_outlet = browse(f"{base}/?outlet=outlet-004&period=")
    assert [int(n) for n in re.findall(r'data-story="(\d+)"', by_outlet)] == [story["004"]]
    bad = browse(f"{base}/?q=Meta%20OR%20Google")
    assert "Paramètre invalide" in bad and "q :" in bad


def test_story_page_lists_the_coverage_with_links_and_why(
    site: tuple[str, dict[str, int]], browse: Callable[..., str]
) -> None:
    base, story = site
    dom = browse(f"{base}/stories/{story['000']}")
    found = {href for href, _text in links(dom)}
    for seed in ("000", "001", "002", "003"):
        assert f"https://outlet-{seed}.example.fr/article" in found, seed
    assert "https://outlet-004.example.fr/article" not in found
    assert dom.count('class="article"') == 4
    assert "Pourquoi ici : a ouvert le sujet" in dom and "Pourquoi ici : rapproché de ce sujet (score" in dom
    assert "Erreur" not in browse(f"{base}/feeds") and "Lettres de veille" in browse(f"{base}/digests")
    assert "Erreur 404" in browse(f"{base}/stories/999999")


def test_a_script_title_is_text_everywhere(site: tuple[str, dict[str, int]], browse: Callable[..., str]) -> None:
    """The title is shown as typed, no script runs (browse fails on any console message), on every page."""
    base, story = site
    escaped = html.escape(XSS_TITLE, quote=False)
    for path in ("/", f"/stories/{story['Hostile']}", "/search?q=Tibet"):
        dom = browse(base + path)
        assert "<script>alert" not in dom, path
        assert escaped in dom or "&lt;script&gt;" in dom, path
    search = browse(f"{base}/search?q=militaires")
    assert "<mark>" in search and "sujet" in search


def test_readable_on_a_phone(site: tuple[str, dict[str, int]], tmp_path: Path, browse: Callable[..., str]) -> None:
    base, story = site
    shot = tmp_path / "phone.png"
    browse(f"{base}/stories/{story['000']}", screenshot=shot)
    assert shot.stat().st_size > 5000


def test_error_pages_and_counts_read_as_french(
    seeded_database: tuple[dict[str, str], dict[str, int]], browse: Callable[..., str]
) -> None:
    """Error pages carry the zone like every page, and counts agree in French: 0 takes the singular."""
    env, _story = seeded_database
    feeds = Path(env["MONITOR_FEEDS_FILE"])
    digest = feeds.read_text(encoding="utf-8").replace("'0 7 * * *'", "'0 7 * * *', max_stories: 1")
    feeds.write_text(digest, encoding="utf-8")
    with serving(env) as base:
        missing = browse(f"{base}/nowhere")
        assert "Page introuvable." in missing and "heures de Europe/Paris" in missing
        assert "0 sujet correspond aux filtres, classé par" in browse(f"{base}/?q=introuvable")
        assert "1 sujet au plus" in browse(f"{base}/digests")
