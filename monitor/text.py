"""French text normalisation shared by near-copy detection and story matching."""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'"})
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_WORD_OR_BREAK = re.compile(r"[^\W_]+|[.!?:;\n\"«»]", re.UNICODE)


def normalize(text: str) -> str:
    """NFKC, one apostrophe, lower case."""
    return unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()


def words(text: str) -> list[str]:
    """Word tokens of normalised text; elisions (l' d' qu' jusqu') come apart at the apostrophe."""
    return _WORD.findall(normalize(text))


class Token(NamedTuple):
    word: str  # normalised, lower case
    name: bool  # written with a capital away from a sentence start: likely a named entity


def tokens(text: str) -> list[Token]:
    """Words with a flag for likely names (Meta, Clegg, Lockheed), which say more about an event."""
    result: list[Token] = []
    sentence_start = True
    for match in _WORD_OR_BREAK.finditer(unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)):
        raw = match.group(0)
        if not raw[0].isalnum():
            sentence_start = True
            continue
        result.append(Token(raw.lower(), raw[0].isupper() and not sentence_start))
        sentence_start = False
    return result
