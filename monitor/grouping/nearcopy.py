"""Tier 1: near-copies (wire reprints, truncated or lightly edited versions) with MinHash LSH.

Signatures are datasketch MinHashes over word shingles of normalised text. LSH buckets are
stored in the database (``article_bands``), so every worker shares one index and nothing is
rebuilt at start. Every candidate is verified: estimated Jaccard, or containment for a copy
cut short. Signatures are only comparable under identical parameters, so the parameters are
fingerprinted in the database and a mismatch refuses to run (``IndexMismatch``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
from datasketch import MinHash

from monitor.errors import IndexMismatch
from monitor.text import words

NUM_PERM = 128
SEED = 20241105
BANDS, ROWS = 32, 4  # LSH threshold ≈ (1/32)^(1/4) ≈ 0.42: catches 60 % truncations (Jaccard 0.6)
SHINGLE = 4
MIN_SHINGLES = 20  # texts shorter than this are never called copies: too little evidence
JACCARD_MIN = 0.5
CONTAINMENT_MIN = 0.8
SCHEME = "affine32"  # datasketch 2.0's default, named so that it stays put
_PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME).permutations  # drawn once, not per article
FINGERPRINT = (
    f"datasketch={version('datasketch')};hash=sha1_hash32;seed={SEED};num_perm={NUM_PERM};"
    f"bands={BANDS}x{ROWS};shingle=words{SHINGLE}"
)


@dataclass(frozen=True)
class Signature:
    minhash: bytes
    shingle_count: int
    band_keys: tuple[int, ...]


@dataclass(frozen=True)
class Stored:
    article_id: int
    minhash: bytes
    shingle_count: int


@dataclass(frozen=True)
class NearCopy:
    article_id: int
    similarity: float  # estimated Jaccard
    containment: float


def check_fingerprint(stored: str | None) -> None:
    if stored is not None and stored != FINGERPRINT:
        raise IndexMismatch(
            f"the near-copy index was built with {stored!r} but this version uses {FINGERPRINT!r}; "
            "signatures are not comparable: re-run `monitor recluster` on a database built with these parameters"
        )


def signature(text: str) -> Signature:
    tokens = words(text)
    shingles = {" ".join(tokens[i : i + SHINGLE]).encode("utf-8") for i in range(max(1, len(tokens) - SHINGLE + 1))}
    minhash = MinHash(num_perm=NUM_PERM, seed=SEED, permutations=_PERMUTATIONS, scheme=SCHEME)
    minhash.update_batch(sorted(shingles))
    values = minhash.hashvalues.astype("<u8")
    keys = tuple(_band_key(band, values[band * ROWS : (band + 1) * ROWS]) for band in range(BANDS))
    return Signature(values.tobytes(), len(shingles), keys)


def _band_key(band: int, rows: np.ndarray) -> int:
    digest = hashlib.blake2b(band.to_bytes(2, "little") + rows.tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def best_near_copy(sig: Signature, candidates: Sequence[Stored]) -> NearCopy | None:
    """The most similar verified candidate (ties: the oldest article), or None."""
    if sig.shingle_count < MIN_SHINGLES:
        return None
    mine = np.frombuffer(sig.minhash, dtype="<u8")
    best: NearCopy | None = None
    for candidate in candidates:
        if candidate.shingle_count < MIN_SHINGLES:
            continue
        jaccard = float(np.mean(mine == np.frombuffer(candidate.minhash, dtype="<u8")))
        shared = jaccard * (sig.shingle_count + candidate.shingle_count) / (1 + jaccard)
        containment = min(1.0, shared / min(sig.shingle_count, candidate.shingle_count))
        if jaccard < JACCARD_MIN and containment < CONTAINMENT_MIN:
            continue
        score = max(jaccard, containment)
        if (
            best is None
            or score > max(best.similarity, best.containment)
            or (score == max(best.similarity, best.containment) and candidate.article_id < best.article_id)
        ):
            best = NearCopy(candidate.article_id, round(jaccard, 4), round(containment, 4))
    return best
