# ruff: noqa: E501  (the templates are HTML as outlets write it, long lines included, like corpus.py's page)
"""Labelled articles as users' articles arrive: each one an outlet's HTML page, for trafilatura to extract.

A labelled record (title, text, url, source, published_at) becomes a page as a French outlet serves it: menu,
breadcrumbs, the headline in an ``<h1>``, a date line, the article's paragraphs, an "À lire aussi" block of
the same outlet's other headlines, a share bar, a couple of readers' comments, a footer of legal links.
Each outlet has one of three templates (a WordPress theme; ``<article>``/``<aside>`` with an inline
"Lire aussi" link in the text; an old div-and-``<br>`` site), chosen from its name, so the choice is the
same on every run and every machine.

``pages_file`` writes the JSONL an archive of such pages would be: the ``text`` of each line replaced by
its page in ``html``, everything else (url, title as the feed gives it, published_at, source, labels)
unchanged. The import then extracts every page exactly as the daemon extracts a fetched one.
"""

from __future__ import annotations

import html
import json
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.text import MONTHS

SECTIONS = ("International", "France", "Politique", "Économie", "Société", "Culture", "Sports", "Sciences")

AUTHORS = ("Camille Durand", "Julien Moreau", "Sophie Lefèvre", "Rédaction", "Nicolas Girard", "Claire Fontaine")

COMMENTERS = ("Jean-Pierre 75", "marie_l", "Citoyen lambda", "Bernard D.", "Lulu33", "Un lecteur", "Hélène R.")

COMMENTS = (
    "Merci pour cet article très clair, enfin quelqu'un qui prend le temps d'expliquer.",
    "Toujours la même chose, on nous promet des changements et rien ne bouge.",
    "Je ne suis pas du tout d'accord avec cette analyse, il manque la moitié du contexte.",
    "Quelqu'un sait où trouver le rapport complet dont il est question ?",
    "Article intéressant mais le titre est un peu racoleur.",
    "Et pendant ce temps-là, les vrais problèmes attendent.",
    "Bravo à la rédaction pour le suivi de ce dossier depuis le début.",
    "On en reparlera dans six mois, je prends les paris.",
    "Triste époque. Courage à toutes les personnes concernées.",
)

RELATED = 4  # headlines of the outlet's other articles in its "À lire aussi" block
READ_ALSO_AFTER = 2  # the inline "Lire aussi" link of the <article> template follows this many paragraphs


@dataclass(frozen=True)
class Page:
    """What a template fills in, already escaped for HTML."""

    title: str
    url: str
    site: str
    slug: str
    published: datetime
    author: str
    section: str
    paragraphs: list[str]
    related: list[tuple[str, str]]  # (headline, url) of the outlet's other articles
    comments: list[tuple[str, str]]  # (name, text)

    @property
    def iso(self) -> str:
        return self.published.isoformat()

    def date(self) -> str:
        return f"{self.published.day} {MONTHS[self.published.month - 1]} {self.published.year}"

    def time(self) -> str:
        return f"{self.published.hour}h{self.published.minute:02d}"

    def related_items(self, item: str) -> str:
        return "\n".join(item.format(title=title, url=url) for title, url in self.related)


def _wordpress(p: Page) -> str:
    menu = "".join(f'<li class="menu-item"><a href="/{s.lower()}/">{s}</a></li>' for s in SECTIONS)
    paragraphs = "\n".join(f"<p>{text}</p>" for text in p.paragraphs)
    related = p.related_items(
        '<div class="jp-relatedposts-post"><h4 class="jp-relatedposts-post-title">'
        '<a class="jp-relatedposts-post-a" href="{url}">{title}</a></h4></div>'
    )
    recent = p.related_items('<li><a href="{url}">{title}</a></li>')
    comments = "\n".join(
        f'<li class="comment even thread-even depth-1"><article class="comment-body"><footer class="comment-meta">'
        f'<div class="comment-author vcard"><b class="fn">{name}</b> <span class="says">dit :</span></div>'
        f'<div class="comment-metadata"><time datetime="{p.iso}">{p.date()}</time></div></footer>'
        f'<div class="comment-content"><p>{text}</p></div></article></li>'
        for name, text in p.comments
    )
    return f"""<!DOCTYPE html>
<html lang="fr-FR"><head><meta charset="UTF-8">
<title>{p.title} – {p.site}</title>
<link rel="canonical" href="{p.url}">
<meta property="og:type" content="article"><meta property="og:title" content="{p.title}">
<meta property="og:site_name" content="{p.site}">
<meta property="article:published_time" content="{p.iso}">
</head>
<body class="post-template-default single single-post single-format-standard">
<div id="page" class="site"><a class="skip-link screen-reader-text" href="#content">Aller au contenu</a>
<header id="masthead" class="site-header"><div class="site-branding"><p class="site-title"><a href="/" rel="home">{p.site}</a></p>
<p class="site-description">L'actualité en continu, vérifiée et sans détour</p></div>
<nav id="site-navigation" class="main-navigation"><button class="menu-toggle">Menu</button>
<ul id="primary-menu" class="menu"><li class="menu-item"><a href="/">Accueil</a></li>{menu}</ul></nav></header>
<div id="content" class="site-content"><div id="primary" class="content-area"><main id="main" class="site-main">
<nav class="breadcrumbs" aria-label="Fil d'Ariane"><span><a href="/">Accueil</a></span> » <span><a href="/{p.slug}/">{p.section}</a></span> » <span class="breadcrumb_last">{p.title}</span></nav>
<article class="post type-post status-publish format-standard hentry category-{p.slug}">
<header class="entry-header"><h1 class="entry-title">{p.title}</h1>
<div class="entry-meta"><span class="posted-on">Publié le <a href="{p.url}" rel="bookmark"><time class="entry-date published" datetime="{p.iso}">{p.date()} à {p.time()}</time></a></span>
<span class="byline"> par <span class="author vcard"><a class="url fn n" href="/auteur/">{p.author}</a></span></span></div></header>
<div class="entry-content">
{paragraphs}
<div class="sharedaddy sd-sharing-enabled"><h3 class="sd-title">Partager :</h3><ul><li><a class="share-facebook" href="#">Facebook</a></li>
<li><a class="share-twitter" href="#">X</a></li><li><a class="share-print" href="#">Imprimer</a></li></ul></div>
<div id="jp-relatedposts" class="jp-relatedposts"><h3 class="jp-relatedposts-headline"><em>À lire aussi</em></h3>
<div class="jp-relatedposts-items">
{related}
</div></div>
</div>
<footer class="entry-footer"><span class="cat-links">Publié dans <a href="/{p.slug}/" rel="category tag">{p.section}</a></span></footer>
</article>
<div id="comments" class="comments-area"><h2 class="comments-title">{len(p.comments)} réponses à « {p.title} »</h2>
<ol class="comment-list">
{comments}
</ol>
<div id="respond" class="comment-respond"><h3 class="comment-reply-title">Laisser un commentaire</h3>
<form class="comment-form"><p class="comment-notes">Votre adresse e-mail ne sera pas publiée. Les champs obligatoires sont indiqués avec *</p>
<textarea name="comment"></textarea><input type="submit" value="Laisser un commentaire"></form></div></div>
</main></div>
<aside id="secondary" class="widget-area"><section class="widget widget_recent_entries"><h2 class="widget-title">Articles récents</h2>
<ul>
{recent}
</ul></section></aside></div>
<footer id="colophon" class="site-footer"><div class="site-info"><a href="/mentions-legales/">Mentions légales</a> |
<a href="/confidentialite/">Politique de confidentialité</a> | <a href="/cookies/">Gestion des cookies</a> | <a href="/contact/">Contact</a>
— © {p.published.year} {p.site}. Fièrement propulsé par WordPress</div></footer>
</div></body></html>"""


def _semantic(p: Page) -> str:
    nav = "".join(f'<li class="nav__item"><a href="/{s.lower()}/">{s}</a></li>' for s in SECTIONS)
    body = [f'<p class="article__paragraph">{text}</p>' for text in p.paragraphs]
    if p.related:
        title, url = p.related[0]
        body.insert(
            min(READ_ALSO_AFTER, len(body)),
            f'<section class="catcher catcher--inline"><span class="catcher__title">Lire aussi</span> '
            f'<a class="catcher__desc" href="{url}">{title}</a></section>',
        )
    related = p.related_items('<li class="aside__item"><a href="{url}">{title}</a></li>')
    comments = "\n".join(
        f'<div class="comment"><p class="comment__author">{name}</p><p class="comment__text">{text}</p></div>'
        for name, text in p.comments
    )
    ld = json.dumps(
        {
            "@context": "https://schema.org",
            "@type": "NewsArticle",
            "headline": html.unescape(p.title),
            "datePublished": p.iso,
            "author": {"@type": "Person", "name": html.unescape(p.author)},
            "publisher": {"@type": "Organization", "name": html.unescape(p.site)},
        },
        ensure_ascii=False,
    ).replace("</", "<\\/")
    paragraphs = "\n".join(body)
    return f"""<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>{p.title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta property="og:site_name" content="{p.site}">
<script type="application/ld+json">{ld}</script>
</head><body>
<header class="header"><div class="header__logo"><a href="/">{p.site}</a></div>
<nav class="nav" aria-label="Rubriques"><ul class="nav__list"><li class="nav__item"><a href="/">À la une</a></li>{nav}</ul></nav>
<div class="header__actions"><a href="/abonnement/">S'abonner</a> <a href="/connexion/">Se connecter</a></div></header>
<main class="main">
<ol class="breadcrumb"><li><a href="/">Accueil</a></li><li><a href="/{p.slug}/">{p.section}</a></li><li>Article</li></ol>
<article class="article article--content">
<header class="article__header"><h1 class="article__title">{p.title}</h1>
<div class="meta"><span class="meta__author">Par {p.author}</span>
<span class="meta__date">Publié le {p.date()} à {p.time()}</span>
<span class="meta__reading-time">Temps de lecture : 3 min.</span></div></header>
<section class="article__content">
{paragraphs}
</section>
<footer class="article__footer"><div class="share"><span>Partager</span> <a href="#">Facebook</a> <a href="#">X</a>
<a href="#">LinkedIn</a> <a href="#">Copier le lien</a></div></footer>
</article>
<aside class="aside aside--related"><h2 class="aside__title">À lire aussi</h2><ul class="aside__list">
{related}
</ul></aside>
<section class="comments" id="comments"><h2 class="comments__title">Réactions</h2>
{comments}
<p class="comments__cta">Vous devez être abonné pour réagir.</p></section>
</main>
<footer class="footer"><nav class="footer__legal"><a href="/mentions-legales">Mentions légales</a>
<a href="/cgv">Conditions générales de vente</a> <a href="/confidentialite">Politique de confidentialité</a>
<a href="/cookies">Gestion des cookies</a> <a href="/aide">Aide</a></nav>
<p class="footer__copyright">© {p.site} {p.published.year} — Toute reproduction interdite</p></footer>
</body></html>"""


def _div_soup(p: Page) -> str:
    menu = "".join(f'<div class="item"><a href="/{s.lower()}.html">{s}</a></div>' for s in SECTIONS)
    body = "<br /><br />\n".join(p.paragraphs)
    related = p.related_items('<div class="lien"><a href="{url}">{title}</a></div>')
    comments = "\n".join(
        f'<div class="com"><div class="com_auteur">{name}, le {p.published:%d/%m/%Y}</div>'
        f'<div class="com_texte">{text}</div></div>'
        for name, text in p.comments
    )
    return f"""<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<title>{p.site} : {p.title}</title></head>
<body><div id="global"><div id="bandeau"><div class="logo"><a href="/"><img src="/img/logo.gif" alt="{p.site}"></a></div>
<div class="pub">Publicité</div></div>
<div id="menu"><div class="item"><a href="/">Accueil</a></div>{menu}</div>
<div id="filariane">Vous êtes ici : <a href="/">Accueil</a> &gt; <a href="/{p.slug}.html">{p.section}</a> &gt; <span>{p.title}</span></div>
<div id="colonnes"><div id="col_gauche">
<div class="titre_article"><h1>{p.title}</h1></div>
<div class="date_article">Publié le {p.published:%d/%m/%Y} à {p.published:%H:%M} - {p.author}</div>
<div class="outils"><a href="#">Imprimer</a> | <a href="#">Envoyer à un ami</a> | Taille du texte <a href="#">A+</a> <a href="#">A-</a></div>
<div class="texte_article">
{body}
</div>
<div class="bloc_lire_aussi"><div class="titre_bloc">À lire aussi</div>
{related}
</div>
<div class="bloc_commentaires"><div class="titre_bloc">Vos commentaires ({len(p.comments)})</div>
{comments}
<div class="com_form">Pour réagir, <a href="/identification.html">identifiez-vous</a></div></div>
</div>
<div id="col_droite"><div class="bloc"><div class="titre_bloc">Les plus lus</div>
{related}
</div><div class="pub">Publicité</div></div>
</div>
<div id="pied"><a href="/mentions.html">Mentions légales</a> - <a href="/cgu.html">CGU</a> -
<a href="/donnees.html">Données personnelles</a> - <a href="/contact.html">Contact</a> - <a href="/plan.html">Plan du site</a><br />
© {p.published.year} {p.site} - Reproduction interdite sans autorisation</div>
</div></body></html>"""


TEMPLATES: dict[str, Callable[[Page], str]] = {"wordpress": _wordpress, "semantic": _semantic, "div-soup": _div_soup}


def template_of(source: str) -> str:
    """The outlet's template: the same for all its pages, on every run (crc32, not the salted ``hash``)."""
    names = sorted(TEMPLATES)
    return names[zlib.crc32(source.encode("utf-8")) % len(names)]


def page_html(record: dict[str, Any], related: Sequence[tuple[str, str]]) -> str:
    """The record's page; ``related`` are (headline, url) of other articles, shown as the outlet's links."""
    rng = random.Random(record["url"])
    source = record.get("source") or "presse"
    section = rng.choice(SECTIONS)
    names = rng.sample(COMMENTERS, 2)
    texts = rng.sample(COMMENTS, 2)
    page = Page(
        title=html.escape(record["title"]),
        url=html.escape(record["url"]),
        site=html.escape(source.replace("-", " ").title()),
        slug=section.lower().replace("é", "e"),
        published=datetime.fromisoformat(record["published_at"]),
        author=html.escape(rng.choice(AUTHORS)),
        section=section,
        paragraphs=[html.escape(p.strip()) for p in record["text"].splitlines() if p.strip()],
        related=[(html.escape(title), html.escape(url)) for title, url in related],
        comments=[(html.escape(n), html.escape(t)) for n, t in zip(names, texts, strict=True)],
    )
    return TEMPLATES[template_of(source)](page)


def related_for(record: dict[str, Any], records: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """A few of the same outlet's other articles, chosen from the record's URL (so the same on every run)."""
    others = sorted(
        (
            (r["title"], r["url"])
            for r in records
            if r.get("source") == record.get("source") and r["url"] != record["url"]
        ),
        key=lambda pair: pair[1],
    )
    return random.Random(f"related {record['url']}").sample(others, min(RELATED, len(others)))


def pages_file(text_file: Path, directory: Path) -> Path:
    """``text_file`` (JSONL with ``text``) as the same lines with ``html`` pages instead: ``<name>-pages.jsonl``."""
    records = [json.loads(raw) for raw in text_file.read_text(encoding="utf-8").splitlines() if raw.strip()]
    lines = []
    for record in records:
        row = {key: value for key, value in record.items() if key != "text"}
        row["html"] = page_html(record, related_for(record, records))
        lines.append(json.dumps(row, ensure_ascii=False))
    path = directory / f"{text_file.stem}-pages.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
