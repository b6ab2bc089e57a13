"""Backfill from a JSONL archive through exactly the same ingestion path as fetched articles."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from monitor.errors import ExtractionError, ImportLineError, StorageError
from monitor.ingest import BATCH, Incoming, Ingestor, Prepared


class ImportLine(BaseModel):
    """One archive line; unknown fields (labels, for instance) are ignored, never read."""

    model_config = ConfigDict(extra="ignore")

    url: str
    title: str | None = None
    text: str | None = None
    html: str | None = None
    published_at: AwareDatetime
    source: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _has_body(self) -> ImportLine:
        if not (self.text and self.text.strip()) and not (self.html and self.html.strip()):
            raise ValueError("needs a non-empty 'text' or 'html'")
        return self


@dataclass
class ImportReport:
    lines: int = 0
    added: int = 0
    already_known: int = 0
    merged: int = 0
    errors: list[ImportLineError] = field(default_factory=list)


def read_lines(path: Path) -> Iterator[tuple[int, ImportLine | ImportLineError]]:
    """Each line parsed, or the error that names it; blank lines are skipped."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield number, ImportLine.model_validate(json.loads(raw))
            except json.JSONDecodeError as e:
                yield number, ImportLineError(number, f"not JSON: {e.msg} at column {e.colno}")
            except ValidationError as e:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'line'}: {err['msg']}" for err in e.errors()
                )
                yield number, ImportLineError(number, problems)


def import_file(
    path: Path, ingestor: Ingestor, progress: Callable[[int], None] | None = None, batch_size: int = BATCH
) -> ImportReport:
    """Import in file order, ``batch_size`` articles per transaction; a bad line is reported and skipped,
    the rest goes on. Should a batch fail to store, its lines are stored one by one, so the error names
    the line that caused it."""
    report = ImportReport()
    now = datetime.now(UTC)
    batch: list[tuple[int, Prepared]] = []
    for number, line in read_lines(path):
        report.lines += 1
        if isinstance(line, ImportLineError):
            report.errors.append(line)
            continue
        try:
            batch.append((number, ingestor.prepare(_incoming(line, now))))
        except ExtractionError as e:
            report.errors.append(ImportLineError(number, str(e)))
        if len(batch) >= batch_size:
            _store(batch, ingestor, report, progress)
            batch = []
    _store(batch, ingestor, report, progress)
    report.merged = len(ingestor.merge_young_stories() or [])  # stories that turned out to be one
    return report


def _incoming(line: ImportLine, now: datetime) -> Incoming:
    return Incoming(
        url=line.url,
        fetched_at=now,
        title=line.title,
        text=line.text,
        html=line.html,
        published_at=line.published_at.astimezone(UTC),
        source=line.source,
    )


def _store(
    batch: list[tuple[int, Prepared]],
    ingestor: Ingestor,
    report: ImportReport,
    progress: Callable[[int], None] | None,
) -> None:
    try:
        outcomes = ingestor.store_many([prepared for _, prepared in batch])
    except StorageError as e:
        if len(batch) == 1:
            report.errors.append(ImportLineError(batch[0][0], str(e)))
        else:
            for single in batch:
                _store([single], ingestor, report, None)
    else:
        for outcome in outcomes:
            if outcome.created:
                report.added += 1
            else:
                report.already_known += 1
    if progress and batch:
        progress(batch[-1][0])
