"""What differs between PostgreSQL and SQLite, and the bulk-SQL helpers every part uses."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Table,
    Text,
    cast,
    or_,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from monitor.errors import StorageError
from monitor.storage.schema import Base, Meta


class Unit:
    """A transaction on the schema, and what every part of the repository shares: dialect differences."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._change_number: int | None = None  # this transaction's, once it changes stories (StoryIndex)

    def get_meta(self, key: str) -> str | None:
        return self.session.scalar(select(Meta.value).where(Meta.key == key))  # no ORM identity bookkeeping

    def set_meta(self, key: str, value: str) -> None:
        self.session.merge(Meta(key=key, value=value))

    def add_to_meta(self, key: str, amount: int) -> int:
        """Add ``amount`` to a counter kept in meta (created at ``amount``), in one statement that takes the
        row's lock: the new value."""
        counter = self._insert()(Meta).values(key=key, value=str(amount))
        bumped = counter.on_conflict_do_update(
            index_elements=[Meta.key], set_={"value": cast(cast(Meta.value, BigInteger) + amount, Text)}
        ).returning(Meta.value)
        return int(self.session.execute(bumped).scalar_one())

    def _insert_many(
        self, model: type[Base], rows: Sequence[Mapping[str, Any]], *, on_conflict: str | None = None
    ) -> None:
        """Many rows in one statement. PostgreSQL takes each column as one array (unnest, ``_joined``): one
        round trip and one parse, where executemany costs a round of the driver per row. On a primary-key
        clash, ``on_conflict`` = a column: add its new value to the stored one; ``"replace"``: take the new
        values, and leave a row whose values are the same untouched (no new row version)."""
        if not rows:
            return
        table = _table(model)
        key = [column.name for column in table.primary_key.columns]
        columns = list(rows[0])
        changing = [c for c in columns if c not in key]
        if not self._postgres():
            statement = sqlite_insert(table)
            if on_conflict == "replace":
                statement = statement.on_conflict_do_update(
                    index_elements=key,
                    set_={c: statement.excluded[c] for c in changing},
                    where=or_(*(table.c[c] != statement.excluded[c] for c in changing)),
                )
            elif on_conflict:
                statement = statement.on_conflict_do_update(
                    index_elements=key, set_={on_conflict: table.c[on_conflict] + statement.excluded[on_conflict]}
                )
            self.session.execute(statement, list(rows))
            return
        dialect = self.session.get_bind().dialect
        arrays = ", ".join(_array(c, table.c[c].type.compile(dialect=dialect)) for c in columns)
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
        if on_conflict == "replace":
            sql += (
                f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in changing)}"
                f" WHERE ({', '.join(f'{table.name}.{c}' for c in changing)})"
                f" IS DISTINCT FROM ({', '.join(f'excluded.{c}' for c in changing)})"
            )
        elif on_conflict:
            sql += (
                f" ON CONFLICT ({', '.join(key)}) DO UPDATE"
                f" SET {on_conflict} = {table.name}.{on_conflict} + excluded.{on_conflict}"
            )
        self.session.execute(sql_text(sql), {c: _joined([row[c] for row in rows]) for c in columns})

    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def _insert(self) -> Any:
        return pg_insert if self._postgres() else sqlite_insert

    def try_cluster_lock(self, job: str) -> bool:
        """One worker at a time for a cluster-wide job (PostgreSQL: advisory lock until commit); False if taken."""
        if self.session.get_bind().dialect.name != "postgresql":
            return True
        return bool(self.session.scalar(sql_text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _lock_key(job)}))

    def lock_cluster(self, job: str) -> None:
        """Wait for the cluster-wide lock of ``job`` until this transaction ends (PostgreSQL; no-op on SQLite).

        Under READ COMMITTED every read after it sees what the previous holder committed. Placement reads
        before it, then asks which stories changed meanwhile (``StoryIndex.stories_changed_since``)."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(job)})


def _table(model: type[Base]) -> Table:
    """The Core table of a model, for statements that need no ORM bookkeeping (bulk and hot-path writes)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


_SEPARATOR = "\x1f"  # the ASCII unit separator: in no term, number or timestamp


def _array(parameter: str, sql_type: str) -> str:
    """A PostgreSQL array of ``sql_type`` from a parameter bound to ``_joined`` values. Split and cast in a
    subquery, so that a prepared statement's generic plan does it once, not once per row it meets; the
    outer cast (a no-op) makes ``= ANY(...)`` read it as an array, not as a set of rows."""
    return f"CAST((SELECT CAST(string_to_array(:{parameter}, chr({ord(_SEPARATOR)})) AS {sql_type}[])) AS {sql_type}[])"


def _joined(values: Iterable[Any]) -> str:
    """Values as one string for ``_array``: psycopg dumps a list element by element in Python (6.8 ms for
    three columns of 2,000 values, against 0.1 ms for three strings), and a batch sends thousands."""
    parts = [v if isinstance(v, str) else v.isoformat() if isinstance(v, datetime) else repr(v) for v in values]
    joined = _SEPARATOR.join(parts)
    if joined.count(_SEPARATOR) != max(0, len(parts) - 1):
        raise StorageError(f"a value holds the array separator U+001F: {[p for p in parts if _SEPARATOR in p][:3]}")
    return joined


def _lock_key(job: str) -> int:
    """A stable 64-bit advisory lock key per job name."""
    return int.from_bytes(hashlib.blake2b(f"monitor:{job}".encode(), digest_size=8).digest(), "big", signed=True)


IN_LIST = 500  # values bound in one IN (...) list: well under SQLite's historical 999-parameter limit
BAND_KEYS_IN_LIST = 1000  # band keys are single integers: one list may take more of them
STORY_PAIRS_IN_LIST = 100  # stories per delete of (story, term) pairs: each story brings up to 30 pairs


def _chunks(items: Sequence[Any], size: int = IN_LIST) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
