"""French text normalisation, one for all: near-copies, story terms and watch queries read words alike.

The one stemmer (Snowball French), the one accent folding and the one French stop-word list are here;
story terms add to that list words that say nothing of an event (days, months, elisions).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, timedelta
from functools import lru_cache

import Stemmer
from stop_words import get_stop_words

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'"})
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_WORD_OR_BREAK = re.compile(r"[^\W_]+|[.!?:;\n\"«»]", re.UNICODE)


def normalize(text: str) -> str:
    """NFKC, one apostrophe, lower case."""
    return unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()


@lru_cache(maxsize=1)
def stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("french")


def fold(word: str) -> str:
    """Diacritics off: 'Etat' and 'État' meet."""
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """French stop words, normalised (not folded)."""
    return frozenset(normalize(w) for w in get_stop_words("french"))


def words(text: str) -> list[str]:
    """Word tokens of normalised text; elisions (l' d' qu' jusqu') come apart at the apostrophe."""
    return _WORD.findall(normalize(text))


Token = tuple[str, bool]  # a normalised lower-case word; whether it is written like a name


def tokens(text: str) -> list[Token]:
    """Words with a flag for likely names (Meta, Clegg, Lockheed): capitalised away from a sentence start.
    Names say more about an event. Plain tuples: this runs over every word of every article."""
    result: list[Token] = []
    append = result.append
    sentence_start = True
    for raw in _WORD_OR_BREAK.findall(unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)):
        if raw[0].isalnum():
            append((raw.lower(), not sentence_start and raw[0].isupper()))
            sentence_start = False
        else:
            sentence_start = True
    return result


MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)
_MONTHS = {name: number for number, name in enumerate(MONTHS, start=1)}
_MONTHS.update({"fevrier": 2, "aout": 8, "decembre": 12})
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DAY_MONTH_YEAR = re.compile(rf"\b(1er|\d{{1,2}})\s+({_MONTH})(?:\s+(\d{{4}}))?\b")
_MONTH_YEAR = re.compile(rf"\b({_MONTH})\s+(\d{{4}})\b")
_ISO = re.compile(r"\b(\d{4})-(\d{2})(?:-(\d{2}))?\b")


def mentioned_dates(text: str, published: date) -> list[date]:
    """Calendar dates written in the text: '19 juillet 2023', '4 novembre' (the latest such day at most a
    week after publication), 'juillet 2023' and '2024-11' (mid-month). They say when the event happened."""
    text = normalize(text)
    found: list[tuple[int, date]] = []
    taken: list[range] = []
    for match in _DAY_MONTH_YEAR.finditer(text):
        day = 1 if match.group(1) == "1er" else int(match.group(1))
        month = _MONTHS[match.group(2)]
        year = int(match.group(3)) if match.group(3) else published.year
        moment = _safe_date(year, month, day)
        if moment and not match.group(3) and moment > published + timedelta(days=7):
            moment = _safe_date(year - 1, month, day)
        if moment:
            found.append((match.start(), moment))
            taken.append(range(match.start(), match.end()))
    for match in _MONTH_YEAR.finditer(text):
        if not any(match.start() in span for span in taken):
            moment = _safe_date(int(match.group(2)), _MONTHS[match.group(1)], 15)
            if moment:
                found.append((match.start(), moment))
    for match in _ISO.finditer(text):
        moment = _safe_date(int(match.group(1)), int(match.group(2)), int(match.group(3) or 15))
        if moment:
            found.append((match.start(), moment))
    return [moment for _, moment in sorted(found)]


def _safe_date(year: int, month: int, day: int) -> date | None:
    if not (1900 <= year <= 2100 and 1 <= month <= 12 and 1 <= day <= 31):
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return date(year, month, 28)
