"""The engine, sessions and migrations: one ``Storage`` per process hands out repositories."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from sqlalchemy import (
    create_engine,
    event,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from monitor.errors import SchemaOutOfDate, StorageError
from monitor.storage.dialect import _lock_key
from monitor.storage.repository import Repository


def _is_secret(parameter: str) -> bool:
    """libpq also takes a password from the query string (?password=, ?sslpassword=)."""
    return any(word in parameter.lower() for word in ("password", "secret", "token"))


def shown_url(url: str | URL) -> str:
    """The database URL as it may be printed: its password and secret query parameters masked. A URL that
    does not even parse is not shown at all (where its password starts is unknown)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "(not shown)"
    query = {key: "***" if _is_secret(key) else value for key, value in parsed.query.items()}
    # the query is percent-encoded when rendered: *** comes out as %2A%2A%2A, put back as the password's is
    return parsed.set(query=query).render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")


def masked(message: object, url: str | URL) -> str:
    """``message`` with the URL's secrets masked: a driver error may quote the connection string."""
    text = str(message)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return text
    secrets = [str(parsed.password or "")]
    for key, value in parsed.query.items():
        if _is_secret(key):
            secrets.extend([value] if isinstance(value, str) else value)
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def bad_url(url: str, error: Exception) -> StorageError:
    """A MONITOR_DATABASE_URL that cannot be used, shown masked, with the first line of why."""
    return StorageError(f"bad MONITOR_DATABASE_URL {shown_url(url)}: {masked(str(error).splitlines()[0], url)}")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class EngineOwner:
    """Closes its engine's pooled connections when done (``with``, or close()): a SQLite file is left with
    no -wal beside it, and a command run in-process leaves no connection behind."""

    engine: Engine

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Storage(EngineOwner):
    """Owns the engine; hands out repositories, each one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            # hide_parameters: an error names the statement, never the values (article text, addresses)
            self.engine: Engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise bad_url(url, e) from e
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def display_url(self) -> str:
        """The database URL as a log line may show it."""
        return shown_url(self.engine.url)

    @contextmanager
    def repository(self) -> Iterator[Repository]:
        session = self._sessions()
        try:
            yield Repository(session)
            session.commit()
        except SQLAlchemyError as e:
            session.rollback()
            raise StorageError(f"database error: {masked(e, self.engine.url)}") from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # --- migrations --------------------------------------------------------
    def _alembic_config(self) -> Any:
        from alembic.config import Config

        config = Config(str(Path(__file__).with_name("alembic.ini")))
        config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        config.attributes["engine"] = self.engine
        return config

    def upgrade(self) -> None:
        """Apply pending migrations. On PostgreSQL under the migration lock: workers starting together and
        `monitor db upgrade` run beside them take turns, and whoever comes second finds nothing to do."""
        from alembic import command

        try:
            with self._migration_lock():
                command.upgrade(self._alembic_config(), "head")
        except SQLAlchemyError as e:
            raise StorageError(f"migration failed on {shown_url(self.engine.url)}: {masked(e, self.engine.url)}") from e

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """A session-level advisory lock on its own connection (PostgreSQL); SQLite needs none."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        key = {"key": _lock_key("migration")}
        with self.engine.connect() as conn:
            conn.execute(sql_text("SELECT pg_advisory_lock(:key)"), key)
            conn.commit()  # the lock outlives the transaction; an idle open one could hold up a migration
            try:
                yield
            finally:
                conn.execute(sql_text("SELECT pg_advisory_unlock(:key)"), key)

    def schema_status(self) -> tuple[str | None, str]:
        """(revision in the database, newest revision shipped)."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as e:
            raise StorageError(f"cannot reach the database: {masked(e, self.engine.url)}") from e
        return current, head or ""

    def ensure_schema(self, *, upgrade: bool) -> None:
        current, head = self.schema_status()
        if current == head:
            return
        if not upgrade:
            raise SchemaOutOfDate(
                f"database schema is at {current or 'nothing'}, this version needs {head}: run `monitor db upgrade`"
            )
        self.upgrade()
