"""Near-copies built from real articles are flagged; articles that merely share a topic are not."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from benchmarks.corpus import RPM2
from monitor.errors import IndexMismatch
from monitor.grouping import nearcopy as dedup
from monitor.pipeline.placement import Ingestor
from monitor.pipeline.prepare import Incoming
from monitor.storage import Article, Storage
from tests.support import place_in_batches

BOILERPLATE_TOP = (
    "Publié par la rédaction. Abonnez-vous à notre lettre quotidienne pour ne rien manquer de l'actualité."
)
BOILERPLATE_END = (
    "Cet article vous a plu ? Partagez-le. Tous droits de reproduction réservés, reprise interdite sans accord."
)


def _variants(text: str) -> dict[str, str]:
    words = text.split()
    paragraphs = text.split("\n")
    return {
        "retitled": text,  # the same wire copy under another headline
        "cut60": " ".join(words[: int(len(words) * 0.6)]),
        "paragraph_added": text + "\nContactée par notre rédaction, l'entreprise n'a pas souhaité faire de commentaire "
        "supplémentaire sur ce dossier, qui sera examiné de nouveau dans les prochaines semaines.",
        "boilerplate": "\n".join([BOILERPLATE_TOP, *paragraphs, BOILERPLATE_END]),
    }


def test_near_copies_flagged_with_precision_and_recall(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in RPM2.read_text(encoding="utf-8").splitlines() if line.strip()]
    originals: dict[str, dict[str, str]] = {}
    for row in rows:
        originals.setdefault(row["story"], row)
    storage = Storage(f"sqlite:///{tmp_path}/dedup.db")
    storage.upgrade()
    ingestor = Ingestor(storage)
    family: dict[str, str] = {}  # url → family (original url) for every true copy
    stream = [  # every real article, in stream order: topic siblings are not copies of each other
        Incoming(
            url=row["url"],
            fetched_at=datetime.fromisoformat(row["published_at"]),
            title=row["title"],
            text=row["text"],
            published_at=datetime.fromisoformat(row["published_at"]),
            source=row["source"],
        )
        for row in rows
    ]
    for story, original in sorted(originals.items()):
        family[original["url"]] = original["url"]
        for n, (kind, text) in enumerate(sorted(_variants(original["text"]).items())):
            url = f"https://copies.example.fr/{story}/{kind}"
            family[url] = original["url"]
            when = datetime.fromisoformat(original["published_at"]) + timedelta(hours=n + 1)
            stream.append(
                Incoming(
                    url=url,
                    fetched_at=when,
                    title=f"Dépêche reprise ({kind}) {n}",
                    text=text,
                    published_at=when,
                    source=f"reprise-{kind}",
                )
            )
    place_in_batches(ingestor, stream)  # a copy can meet its original, or another copy, in its own batch
    with storage.repository() as repo:
        articles = repo.session.execute(select(Article.id, Article.url, Article.duplicate_of_id)).all()
    url_of = {a.id: a.url for a in articles}
    flagged = {a.url: url_of[a.duplicate_of_id] for a in articles if a.duplicate_of_id is not None}
    copies = {url for url in family if url != family[url]}
    correct = {u for u, target in flagged.items() if u in copies and family.get(target) == family[u]}
    precision = len(correct) / len(flagged)
    recall = len(correct) / len(copies)
    assert len(copies) == 80
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, sorted(set(flagged) - correct))
    storage.engine.dispose()


def test_index_built_with_other_parameters_is_refused(tmp_path: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path}/fp.db")
    storage.upgrade()
    with storage.repository() as repo:
        repo.set_meta("minhash_fingerprint", "datasketch=1.6.5;hash=sha1_hash32;seed=1;num_perm=256")
    with pytest.raises(IndexMismatch, match="num_perm=256"):
        Ingestor(storage).ingest(
            Incoming(
                url="https://a.fr/x",
                fetched_at=datetime.now().astimezone(),
                title="Titre",
                text="Un texte assez long. " * 30,
            )
        )


def test_signature_is_stable() -> None:
    """Stored signatures must stay comparable: a datasketch or hashing change that alters them fails here."""
    text = "Meta ouvre ses modèles Llama aux agences gouvernementales américaines et aux entreprises de défense."
    sig = dedup.signature(text)
    assert sig == dedup.signature(text)
    assert sig.shingle_count == 11 and len(set(sig.band_keys)) == dedup.BANDS
    assert hashlib.sha256(sig.minhash).hexdigest()[:16] == "74c4799a3d5c88dd"
    assert sig.band_keys[:2] == (-3306804660138520017, -2907233814576980774)
