"""Article text and metadata from an HTML page, with trafilatura.

Boilerplate (navigation, related links, comments, footer) is left out; the canonical link the
page declares, when there is one, becomes the article's identity. What trafilatura keeps of the page's
furniture around the article (the headline again, a date or byline line, a share bar, "Lire aussi" links)
is taken off the text too: its words would count in the article's terms and in its lead.
"""

from __future__ import annotations

import html as html_entities
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import trafilatura
from lxml import html as lxml_html
from trafilatura.settings import Document

from monitor.errors import ExtractionError
from monitor.fetch.urls import absolute_url, canonical_url
from monitor.text import MONTHS, words

MIN_TEXT_CHARS = 200


@dataclass(frozen=True)
class Extracted:
    text: str
    title: str | None
    author: str | None
    published_at: datetime | None
    site_name: str | None
    language: str | None
    canonical_url: str | None


def extract(html: str, url: str, *, title: str | None = None) -> Extracted:
    """Raise ExtractionError (with the URL) when the page yields no usable article text.

    ``title``, the headline the feed gave, if any, is one more form of the headline to take off the
    top of the text."""
    try:
        doc = trafilatura.bare_extraction(
            html, url=url, with_metadata=True, include_comments=False, include_tables=False, favor_precision=True
        )
    except Exception as e:  # trafilatura raises many kinds on hostile markup
        raise ExtractionError(url, f"extraction failed: {type(e).__name__}: {e}") from e
    if not isinstance(doc, Document):
        raise ExtractionError(url, "no article found in the page")
    tree = _parse(html)
    headlines = [doc.title, title, *(_headlines(tree) if tree is not None else [])]
    text = strip_furniture(doc.text or "", headlines, doc.author)
    if len(text) < MIN_TEXT_CHARS:
        raise ExtractionError(url, f"no article text found ({len(text)} characters)")
    return Extracted(
        text=text,
        title=_clean(doc.title),
        author=_clean(doc.author),
        published_at=_parse_date(doc.date),
        site_name=_clean(doc.sitename),
        language=_page_language(html) or _clean(getattr(doc, "language", None)),
        canonical_url=_canonical_link(tree, url) if tree is not None else None,
    )


# Page furniture that extractors keep with the article. Each pattern matches a whole line, and only a
# short one (FURNITURE_CHARS): a paragraph of the article is longer, or reads as a sentence.
HEAD_LINES = 6  # the headline, date, byline and share lines come before the text, among the first lines
TAIL_LINES = 4  # share bars, bylines and dates after the text, at its very end
FURNITURE_CHARS = 160
TITLE_LINES = 3  # the headline repeated: among the first lines only

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u2060\ufeff"))  # soft hyphen, zero-width space, word joiner, BOM
_MONTH = "|".join(MONTHS)
_DATE = (
    rf"\d{{1,2}}\s*[/.-]\s*\d{{1,2}}\s*[/.-]\s*\d{{2,4}}"  # 01/09/2008
    rf"|\b\d{{1,2}}(?:er)?\s+(?:{_MONTH}|fevrier|aout|decembre)\b"  # 1er septembre
    r"|\b\d{1,2}\s*[h:]\s*\d{2}\b"  # 06h35, 06:35
    r"|\b\d{4}-\d{2}-\d{2}\b"  # 2008-09-01
    r"|\bil y a\b|\bhier\b|\baujourd'hui\b"
)
# "Publié le 01/09/2008 à 06:35 - Camille Durand", "Mis à jour le 2 mars 2008", "Updated 2008-09-01"
_DATE_LINE = re.compile(
    r"^(?:publi[ée]e?|mise?\s+[àa]\s+jour|modifi[ée]e?|actualis[ée]e?|post[ée]e?|paru|cr[ée]{2}e?|published|updated|posted)\b"
    rf".{{0,30}}?(?:{_DATE})",
    re.I,
)
_LINE_WORD = re.compile(r"[\w'’-]+")
_DATE_WORDS = frozenset(
    "publié publiée publie publiee mis mise à a jour modifié modifiée actualisé actualisée posté postée paru parue "
    "créé créée le la l' les du de des en ligne par et il y hier aujourd'hui aujourd’hui h min heure heures minutes "
    "lundi mardi mercredi jeudi vendredi samedi dimanche published updated posted on at by "
    f"{' '.join(MONTHS)} fevrier aout decembre".split()
)
# A line that is a date and nothing else ("19 juillet 2023") stays: it may be all that dates the event when
# the feed's date is not the article's, and its words weigh nothing in grouping.
# "Par Camille Durand", "Par Jean Dupont et Marie Martin, envoyée spéciale à Kiev", "By Jane Doe": names
# only (capitalised words), then at most a short role; a sentence ("Par décret, …") has lower-case words
# after "Par", or ends like one.
_NAME = r"[A-ZÀ-ÖØ-Þ][\w'’.-]*(?:\s+(?:de|du|des|d'|le|la|van|von|der|ben|el)?\s*[A-ZÀ-ÖØ-Þ][\w'’.-]*){0,4}"
_BYLINE = re.compile(
    rf"^(?:[Pp]ar|PAR|[Bb]y|BY)\s+{_NAME}(?:\s*(?:,|et|and|avec|with|&)\s*{_NAME})*(?:\s*[,/|–—-]\s*[^.!?]{{0,60}})?$"
)
_READING_TIME = re.compile(
    r"^(?:temps\s+de\s+)?lecture\s*:?\s*\d+\s*min\.?$|^\d+\s*min(?:utes)?\s+de\s+lecture\.?$", re.I
)
_COPYRIGHT = re.compile(r"^(?:©|copyright\b)", re.I)
# What share, tool and footer-link bars are made of: "Partager : Facebook · X", "Imprimer | Envoyer à un
# ami | Taille du texte A+ A-", "Mentions légales - CGU - Contact". A line of these words and nothing else.
_BAR_ITEMS = (
    r"partager(?:\s+(?:sur|par|cet\s+article))?",
    r"imprimer",
    r"envoyer(?:\s+(?:à\s+un\s+ami|par\s+e-?mail|cet\s+article))?",
    r"e-?mail|courriel|facebook|twitter|x|linkedin|whatsapp|messenger|pinterest|telegram|bluesky|threads|flipboard",
    r"copier\s+le\s+lien|lien\s+copié|réagir|commenter|tweeter|favoris|sauvegarder|enregistrer|ajouter\s+à\s+mes\s+favoris",
    r"offrir\s+(?:cet\s+)?article|écouter(?:\s+cet\s+article)?|taille\s+du\s+texte|a\+|a-|share|print|tweet",
    r"mentions\s+légales|cgu|cgv|conditions\s+générales(?:\s+d'utilisation|\s+de\s+vente)?|plan\s+du\s+site",
    r"données\s+personnelles|(?:politique\s+de\s+)?confidentialité|(?:gestion\s+des\s+)?cookies",
    r"contact(?:ez-nous)?|nous\s+contacter|aide|accueil|haut\s+de\s+page|retour\s+en\s+haut|qui\s+sommes-nous",
)
_BAR_WORDS = re.compile(rf"(?<![\w+-])(?:{'|'.join(_BAR_ITEMS)})(?![\w+-])", re.I)
# "À lire aussi : …", "Lire aussi | …", "LIRE AUSSI - …": a link to another article, inline in the text
_READ_ALSO = re.compile(r"^(?:[àa]\s+)?(?:lire|voir|relire)\s+(?:aussi|également|egalement)\s*(?:$|[:|>»–—-])", re.I)
_AD_LABEL = re.compile(r"^(?:publicité|advertisement|annonce)$", re.I)
_SENTENCE_END = re.compile(r"[^\d\s][.!?…]\s*$")  # a sentence ends so; a date ("… 2008.") does not
_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-f]+|[a-z]+\d*);", re.I)  # left escaped: the page escaped its text twice


def strip_furniture(text: str, headlines: Iterable[str | None] = (), author: str | None = None) -> str:
    """``text`` without the page furniture extractors keep around the article: the headline repeated
    at its top, date, byline, reading-time and share or print lines at its top or end, "Lire aussi"
    links and ad labels anywhere. Soft hyphens and entities left escaped are undone, so words read as
    in clean text. Only whole short lines go; a paragraph of the article never matches."""
    text = _ENTITY.sub(lambda m: html_entities.unescape(m.group()), text.translate(_INVISIBLE))
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    titles = {key for key in (_key(h) for h in headlines if h) if key}
    authors = {key for key in (_key(a) for a in re.split(r"[;,]", author or "")) if key}
    keep = [not _inline_furniture(line) for line in lines]
    for i, line in enumerate(lines[:HEAD_LINES]):
        if _edge_furniture(line, authors) or (i < TITLE_LINES and _key(line) in titles):
            keep[i] = False
    for i in range(len(lines) - 1, max(len(lines) - 1 - TAIL_LINES, -1), -1):
        if not _edge_furniture(lines[i], authors):
            break  # from the end, only as long as the lines are furniture: the article ends before them
        keep[i] = False
    return "\n".join(line for line, kept in zip(lines, keep, strict=True) if kept)


def _key(line: str) -> tuple[str, ...]:
    return tuple(words(line))


def _inline_furniture(line: str) -> bool:
    return len(line) <= FURNITURE_CHARS * 2 and bool(_READ_ALSO.match(line) or _AD_LABEL.match(line))


def _edge_furniture(line: str, authors: set[tuple[str, ...]]) -> bool:
    if len(line) > FURNITURE_CHARS:
        return False
    if _READING_TIME.match(line):
        return True
    if _BAR_WORDS.search(line) and not re.search(r"[^\W\d_]", _BAR_WORDS.sub("", line)):
        return True  # nothing but share, tool and footer links
    if _SENTENCE_END.search(line):
        return False  # "Publiée le 3 mars, l'enquête montre une baisse." is the article's
    if _date_line(line) or _BYLINE.match(line) or _COPYRIGHT.match(line):
        return True
    key = _key(line)
    return bool(key) and (key in authors or (key[0] in ("par", "by") and key[1:] in authors))


def _date_line(line: str) -> bool:
    """A publication or update date line, perhaps with an author's name after it: the words besides the
    date are names (capitalised), or one word at most; "Publiée le 3 mars, l'enquête montre …" is text."""
    if not _DATE_LINE.match(line):
        return False
    rest = [w for w in _LINE_WORD.findall(line) if w.lower() not in _DATE_WORDS and w.isalpha()]
    return len(rest) <= 1 or all(w[0].isupper() for w in rest)


def _headlines(tree: lxml_html.HtmlElement) -> list[str]:
    """The page's first ``<h1>`` texts: the headline as the page shows it, which trafilatura may repeat."""
    return [" ".join(h.text_content().split()) for h in tree.xpath("//h1")[:2]]


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_LANG = re.compile(r"<html[^>]*\blang=[\"']?([a-zA-Z]{2,3})", re.I)


def _page_language(html: str) -> str | None:
    match = _LANG.search(html[:5000])
    return match.group(1).lower() if match else None


def _parse(html: str) -> lxml_html.HtmlElement | None:
    try:
        return lxml_html.fromstring(html)
    except (ValueError, lxml_html.etree.ParserError):
        return None


def _canonical_link(tree: lxml_html.HtmlElement, url: str) -> str | None:
    for href in tree.xpath("//link[@rel='canonical']/@href"):
        href = str(href).strip()
        if href.startswith(("http://", "https://", "/")):
            declared = canonical_url(absolute_url(href, url))
            if isinstance(declared, str):
                return declared
    return None
