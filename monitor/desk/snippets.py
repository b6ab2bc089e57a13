"""Search snippets: the words of a text that match a query's stems, highlighted."""

from __future__ import annotations

import re

from monitor.desk.rows import Segment
from monitor.search import index_terms

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def _is_match(word: str, stems: set[str]) -> bool:
    found = index_terms(word)
    return bool(found) and found[0] in stems


def highlight(text: str, stems: set[str]) -> list[Segment]:
    """The text cut into segments, the words of the query (same stems as the search) marked."""
    segments: list[Segment] = []
    position = 0
    for token in _TOKEN.finditer(text):
        if _is_match(token.group(), stems):
            if token.start() > position:
                segments.append(Segment(text[position : token.start()], False))
            segments.append(Segment(token.group(), True))
            position = token.end()
    if position < len(text):
        segments.append(Segment(text[position:], False))
    return segments


def snippet(text: str, stems: set[str], *, before: int = 12, after: int = 28) -> list[Segment]:
    """About forty words around the first match (the opening when the match is only in the title)."""
    tokens = list(_TOKEN.finditer(text))
    if not tokens:
        return []
    first = next((n for n, t in enumerate(tokens) if _is_match(t.group(), stems)), 0)
    start_token, end_token = max(0, first - before), min(len(tokens), first + after)
    start, end = tokens[start_token].start(), tokens[end_token - 1].end()
    segments = highlight(" ".join(text[start:end].split()), stems)
    if start_token > 0:
        segments.insert(0, Segment("… ", False))
    if end_token < len(tokens):
        segments.append(Segment(" …", False))
    return segments
