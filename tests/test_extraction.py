"""Page furniture that trafilatura keeps (headline again, date and byline lines, share bars, "Lire aussi")
is taken off the extracted text, and the article's own paragraphs are never."""

from __future__ import annotations

from monitor.extraction import extract, strip_furniture

URL = "https://journal.example.fr/economie/2024/03/03/usine.html"

TITLE = "L'usine de Saint-Nazaire reprend la production après trois semaines de grève"

PARAGRAPHS = [
    "Les chantiers de Saint-Nazaire ont rouvert lundi matin, après un accord signé dans la nuit entre la "
    "direction et les syndicats sur les salaires et le temps de travail des équipes de nuit.",
    "Par ailleurs, la direction s'est engagée à embaucher deux cents intérimaires en contrat à durée "
    "indéterminée avant la fin de l'année, une revendication portée depuis le début du conflit.",
    "Le carnet de commandes reste plein jusqu'en 2028, selon le directeur du site, qui estime le retard "
    "accumulé à six semaines de livraison pour les deux paquebots en construction.",
]


def old_style_page(paragraphs: list[str], *, before: str = "", after: str = "") -> str:
    """An outlet page of divs and <br>, as older French sites serve them: trafilatura keeps what sits
    between the headline and the text."""
    body = "<br /><br />\n".join(paragraphs)
    return f"""<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<title>Le Journal : {TITLE}</title></head>
<body><div id="menu"><a href="/">Accueil</a> <a href="/economie.html">Économie</a></div>
<div id="contenu"><div class="titre"><h1>{TITLE}</h1></div>
{before}
<div class="corps">
{body}
</div>
{after}
<div id="pied"><a href="/mentions.html">Mentions légales</a> - <a href="/contact.html">Contact</a></div>
</div></body></html>"""


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_headline_date_byline_and_share_bar_are_not_article_text() -> None:
    page = old_style_page(
        PARAGRAPHS,
        before='<div class="infos">Mis à jour le 3 mars 2024 à 10h12 - Marie Martin</div>\n'
        '<div class="outils">Imprimer | Envoyer par e-mail | Réagir (12)</div>',
        after='<div class="partage">Partager : <a href="#">Facebook</a> · <a href="#">LinkedIn</a></div>',
    )
    assert lines(extract(page, URL).text) == PARAGRAPHS


def test_furniture_lines_as_trafilatura_leaves_them() -> None:
    text = "\n".join([TITLE, "Publié le 03/03/2024 à 09:41 - Marie Martin", "Imprimer | Envoyer à un ami", *PARAGRAPHS])
    assert lines(strip_furniture(text, [TITLE])) == PARAGRAPHS


def test_feed_title_counts_as_the_headline() -> None:
    text = "\n".join(["Saint-Nazaire : la production reprend", *PARAGRAPHS])
    assert lines(strip_furniture(text, [None, "Saint-Nazaire : la production reprend"])) == PARAGRAPHS


def test_byline_and_reading_time_lines() -> None:
    text = "\n".join(["Par Marie Martin et Paul Durand, à Saint-Nazaire", "Temps de lecture : 3 min", *PARAGRAPHS])
    assert lines(strip_furniture(text, [TITLE])) == PARAGRAPHS
    text = "\n".join(["Marie Martin", *PARAGRAPHS])  # the author trafilatura read from the page's metadata
    assert lines(strip_furniture(text, [TITLE], author="Marie Martin")) == PARAGRAPHS


def test_read_also_links_inside_the_text_go() -> None:
    text = "\n".join([PARAGRAPHS[0], "À lire aussi : Le port de Nantes bat son record de trafic", *PARAGRAPHS[1:]])
    assert lines(strip_furniture(text, [TITLE])) == PARAGRAPHS


def test_soft_hyphens_and_escaped_entities_read_as_words() -> None:
    text = "Les syndi\u00adcats de Procter &amp; Gamble ont obtenu gain de cause."
    assert strip_furniture(text) == "Les syndicats de Procter & Gamble ont obtenu gain de cause."


def test_article_paragraphs_that_look_like_furniture_are_kept() -> None:
    kept = [
        "Par décret, le gouvernement a prolongé le dispositif jusqu'au 31 décembre.",
        "Par Jean Dupont, on entend ici le délégué syndical, qui a signé l'accord.",
        "Publiée le 3 mars, l'enquête de l'Insee montre une baisse du chômage dans la région.",
        "Publiée le 3 mars, l'enquête de l'Insee montre une baisse du chômage",
        "Le vote | un scrutin serré : 52 % pour, 48 % contre, selon les syndicats.",
        "Imprimer plus vite, envoyer moins cher : c'est l'objectif affiché par le groupe.",
        "Lire aussi le rapport de la Cour des comptes, publié l'an dernier, aide à comprendre l'enjeu du dossier.",
    ]
    text = "\n".join([*kept, *PARAGRAPHS, "Facebook", "Une phrase de fin, qui conclut l'article."])
    assert lines(strip_furniture(text, [TITLE])) == [
        *kept,
        *PARAGRAPHS,
        "Facebook",
        "Une phrase de fin, qui conclut l'article.",
    ]


def test_the_title_repeated_further_down_is_the_article_s() -> None:
    """Only a headline at the top is furniture; the same words as a later paragraph are the article's."""
    text = "\n".join([*PARAGRAPHS, TITLE])
    assert lines(strip_furniture(text, [TITLE])) == [*PARAGRAPHS, TITLE]


def test_real_page_paragraphs_starting_with_par_or_holding_a_bar_survive_extraction() -> None:
    paragraphs = [
        *PARAGRAPHS,
        "Par ailleurs | comme le rappelle la CGT, le site emploie 3 000 salariés et autant de sous-traitants.",
    ]
    assert lines(extract(old_style_page(paragraphs), URL).text) == paragraphs
