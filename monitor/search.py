"""Watch queries: words and "quoted phrases", all required, matched with French full-text search.

PostgreSQL uses its own French configuration (``to_tsvector('french', unaccent(...))`` with a GIN
index); SQLite uses FTS5 over the same Snowball French stems computed here, accents folded, so both
engines answer the same on the same data.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from monitor.text import fold, stemmer, stop_words, words

_PHRASE = re.compile(r'"([^"]+)"')


@dataclass(frozen=True)
class Query:
    terms: tuple[str, ...]
    phrases: tuple[str, ...]

    def __str__(self) -> str:
        return " ".join([*self.terms, *(f'"{p}"' for p in self.phrases)])


def parse_query(text: str) -> Query:
    """Split a watch query into words and quoted phrases; ValueError when nothing searchable is left."""
    phrases = tuple(p.strip() for p in _PHRASE.findall(text) if p.strip())
    rest = _PHRASE.sub(" ", text).replace('"', " ")
    terms = tuple(rest.split())
    query = Query(terms, phrases)
    if not any(index_terms(part) for part in (*terms, *phrases)):
        raise ValueError(f"query {text!r} has no searchable word")
    return query


def fold_name(name: str) -> str:
    """A name compared without case, accents or spacing: "numerama" is the outlet "Numérama" or "NUMERAMA"."""
    return " ".join(fold(unicodedata.normalize("NFKC", name)).casefold().split())


def index_terms(text: str) -> list[str]:
    """Accent-folded Snowball French stems of the non-stop words, in order (what SQLite's FTS5 indexes)."""
    return [stem for word in words(text) if (stem := _index_term(word)) is not None]


@lru_cache(maxsize=1)
def _stop() -> frozenset[str]:
    return frozenset(fold(w) for w in stop_words())


@lru_cache(maxsize=1 << 16)
def _index_term(word: str) -> str | None:
    """A word's stem, or None for a stop word. Cached: running text reuses a small vocabulary, and folding
    each word of each article took half the time of indexing it."""
    folded = fold(word)
    return None if folded in _stop() else stemmer().stemWord(folded)


def fts5_match(query: Query) -> str:
    """The FTS5 MATCH expression: every word and every phrase required."""
    parts = [f'"{" ".join(stems)}"' for part in (*query.terms, *query.phrases) if (stems := index_terms(part))]
    return " AND ".join(parts)
