"""The pages of `monitor web` in a real headless Chromium against the real server, on SQLite and PostgreSQL.

Chromium (Debian's ``chromium``: ``apt-get install -y chromium``) loads each page, which must render
without a single console message (a CSP violation or a script error would log one); assertions read the
DOM it dumps after rendering.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import pytest

from tests.support import CHROMIUM, XSS_TITLE, chromium, serving

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file() and not os.environ.get("CI"),  # in CI, a missing browser fails the tests
    reason="needs chromium (apt-get install -y chromium)",
)


def browse(url: str, *, screenshot: Path | None = None) -> str:
    """The DOM Chromium builds for the page; fails on any console message."""
    mode = [f"--screenshot={screenshot}", "--window-size=390,900"] if screenshot else ["--dump-dom"]
    done = chromium("--enable-logging=stderr", "--v=0", *mode, url)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    return done.stdout


def links(dom: str) -> list[tuple[str, str]]:
    return [
        (href, html.unescape(re.sub(r"<[^>]+>", "", text)))
        for href, text in re.findall(r'<a[^>]*href="([^"]+)"[^>]*>(.*?)</a>', dom, re.S)
    ]


@pytest.fixture
def site(seeded_desk: tuple[str, dict[str, str], dict[str, int]]) -> tuple[str, dict[str, int]]:
    base, _env, stories = seeded_desk
    return base, stories


def test_stories_page_lists_the_seed_stories_and_filters_narrow_it(site: tuple[str, dict[str, int]]) -> None:
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


def test_story_page_lists_the_coverage_with_links_and_why(site: tuple[str, dict[str, int]]) -> None:
    base, story = site
    dom = browse(f"{base}/stories/{story['000']}")
    found = {href for href, _text in links(dom)}
    for seed in ("000", "001", "002", "003"):
        assert f"https://outlet-{seed}.example.fr/article" in found, seed
    assert "https://outlet-004.example.fr/article" not in found
    assert dom.count('class="article"') == 4
    assert "Pourquoi ici : a ouvert le sujet" in dom and "rapproché du sujet" in dom
    assert "Erreur" not in browse(f"{base}/feeds") and "Lettres de veille" in browse(f"{base}/digests")
    assert "Erreur 404" in browse(f"{base}/stories/999999")


def test_a_script_title_is_text_everywhere(site: tuple[str, dict[str, int]]) -> None:
    """The title is shown as typed, no script runs (browse fails on any console message), on every page."""
    base, story = site
    escaped = html.escape(XSS_TITLE, quote=False)
    for path in ("/", f"/stories/{story['Hostile']}", "/search?q=Tibet"):
        dom = browse(base + path)
        assert "<script>alert" not in dom, path
        assert escaped in dom or "&lt;script&gt;" in dom, path
    search = browse(f"{base}/search?q=militaires")
    assert "<mark>" in search and "sujet" in search


def test_readable_on_a_phone(site: tuple[str, dict[str, int]], tmp_path: Path) -> None:
    base, story = site
    shot = tmp_path / "phone.png"
    browse(f"{base}/stories/{story['000']}", screenshot=shot)
    assert shot.stat().st_size > 5000


def test_error_pages_and_counts_read_as_french(seeded_database: tuple[dict[str, str], dict[str, int]]) -> None:
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
