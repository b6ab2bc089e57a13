"""French text normalisation shared by near-copy detection and story matching."""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'"})
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """NFKC, one apostrophe, lower case."""
    return unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()


def words(text: str) -> list[str]:
    """Word tokens of normalised text; elisions (l' d' qu' jusqu') come apart at the apostrophe."""
    return _TOKEN.findall(normalize(text))
