"""Backfill from a JSONL archive through exactly the same ingestion path as fetched articles.

An archive is untrusted input: each line is read with a size cap (one huge line must not take the
memory of the whole machine), decoded, parsed and checked on its own, and a bad one is reported with
its number and skipped while the rest goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from monitor.errors import ExtractionError, ImportLineError, InvalidURL, StorageError
from monitor.limits import MAX_IMPORT_LINE_BYTES
from monitor.pipeline.placement import BATCH, Ingestor
from monitor.pipeline.prepare import Incoming, Prepared

FUTURE_SLACK = timedelta(days=1)  # time zones and clock skew; anything later is a wrong date
_BOM = b"\xef\xbb\xbf"
_SKIP_CHUNK = 1 << 16


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

    @field_validator("url", "title", "text", "html", "source")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        """JSON can spell a lone surrogate (\\ud800); no database can store one."""
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"has an unpaired surrogate at character {e.start + 1}") from e
        return value

    @field_validator("published_at")
    @classmethod
    def _not_future(cls, value: datetime) -> datetime:
        if value > datetime.now(UTC) + FUTURE_SLACK:
            raise ValueError(f"{value.isoformat()} is more than a day in the future")
        return value

    @model_validator(mode="after")
    def _has_body(self) -> ImportLine:
        if not (self.text and self.text.strip()) and not (self.html and self.html.strip()):
            raise ValueError("needs a non-empty 'text' or 'html'")
        return self


MAX_NAMED_ERRORS = 100  # skipped lines kept with their reason; past them, only counted


@dataclass
class ImportReport:
    lines: int = 0
    added: int = 0
    already_known: int = 0
    merged: int = 0
    skipped: int = 0
    errors: list[ImportLineError] = field(default_factory=list)  # the first MAX_NAMED_ERRORS skipped lines

    def skip(self, error: ImportLineError) -> None:
        """A line skipped: counted, and kept with its reason while few are; a file that is not an archive
        at all (a binary, the wrong export) gives a reason per line, which would fill memory and screen."""
        self.skipped += 1
        if len(self.errors) < MAX_NAMED_ERRORS:
            self.errors.append(error)


def _raw_lines(handle: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, bytes | ImportLineError]]:
    """Each line's bytes, at most ``max_line_bytes`` read into memory: the rest of a longer one is
    skipped, and the line reported."""
    number = 0
    while raw := handle.readline(max_line_bytes + 1):
        number += 1
        if number == 1:
            raw = raw.removeprefix(_BOM)
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while (rest := handle.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield (
                number,
                ImportLineError(number, f"longer than {max_line_bytes} bytes (MONITOR_IMPORT_MAX_LINE_BYTES), skipped"),
            )
            continue
        yield number, raw


def read_records(
    source: Path | BinaryIO, max_line_bytes: int = MAX_IMPORT_LINE_BYTES
) -> Iterator[tuple[int, dict[str, Any] | ImportLineError]]:
    """Each non-blank line as a JSON object, or the error that names it."""
    with source.open("rb") if isinstance(source, Path) else nullcontext(source) as handle:
        for number, raw in _raw_lines(handle, max_line_bytes):
            if isinstance(raw, ImportLineError):
                yield number, raw
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, ImportLineError(number, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield number, ImportLineError(number, f"not JSON: {e.msg} at column {e.colno}")
                continue
            except (ValueError, RecursionError):  # a number of more than 4300 digits, nesting too deep
                yield number, ImportLineError(number, "not JSON this importer can read")
                continue
            if not isinstance(record, dict):
                yield number, ImportLineError(number, f"not a JSON object but {type(record).__name__}")
                continue
            yield number, record


def _problems(error: ValidationError) -> str:
    """Pydantic's errors as the archive's own fields, never the model's name."""
    return "; ".join(
        (f"field {'.'.join(str(p) for p in err['loc'])!r}: " if err["loc"] else "")
        + str(err["msg"]).removeprefix("Value error, ")
        for err in error.errors()
    )


def read_lines(
    source: Path | BinaryIO, max_line_bytes: int = MAX_IMPORT_LINE_BYTES
) -> Iterator[tuple[int, ImportLine | ImportLineError]]:
    """Each line parsed, or the error that names it; blank lines are skipped."""
    for number, record in read_records(source, max_line_bytes):
        if isinstance(record, ImportLineError):
            yield number, record
            continue
        try:
            yield number, ImportLine.model_validate(record)
        except ValidationError as e:
            yield number, ImportLineError(number, _problems(e))


def count_lines(path: Path) -> int:
    """For a progress bar: newlines counted a chunk at a time, never a whole line in memory."""
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def import_file(
    source: Path | BinaryIO,
    ingestor: Ingestor,
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH,
    max_line_bytes: int = MAX_IMPORT_LINE_BYTES,
) -> ImportReport:
    """Import in file order, ``batch_size`` articles per transaction; a bad line is reported and skipped,
    the rest goes on. Should a batch fail to store, its lines are stored one by one, so the error names
    the line that caused it. ``source`` is a file, or a binary stream such as standard input."""
    report = ImportReport()
    now = datetime.now(UTC)
    batch: list[tuple[int, Prepared]] = []
    for number, line in read_lines(source, max_line_bytes):
        report.lines += 1
        if isinstance(line, ImportLineError):
            report.skip(line)
            continue
        try:
            batch.append((number, ingestor.prepare(_incoming(line, now))))
        except (ExtractionError, InvalidURL) as e:
            report.skip(ImportLineError(number, str(e)))
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
            report.skip(ImportLineError(batch[0][0], str(e)))
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
