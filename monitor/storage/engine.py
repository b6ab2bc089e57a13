"""The engine, sessions and migrations: one ``Storage`` per process hands out repositories."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    create_engine,
    event,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from monitor.errors import SchemaOutOfDate, StorageError
from monitor.storage.dialect import _lock_key
from monitor.storage.repository import Repository


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Storage:
    """Owns the engine; hands out repositories, each one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            # hide_parameters: an error names the statement, never the values (article text, addresses)
            self.engine: Engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise StorageError(f"bad MONITOR_DATABASE_URL {self._without_password(url, e)}") from e
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def repository(self) -> Iterator[Repository]:
        session = self._sessions()
        try:
            yield Repository(session)
            session.commit()
        except SQLAlchemyError as e:
            session.rollback()
            raise StorageError(f"database error: {e}") from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @staticmethod
    def _without_password(url: str, error: Exception) -> str:
        """The URL and the reason it was refused, the password masked in both; a URL that does not even
        parse is not shown at all (where its password starts is unknown)."""
        reason = str(error).splitlines()[0]
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            return f"(not shown): {reason}"
        if parsed.password:
            reason = reason.replace(str(parsed.password), "***")
        return f"{parsed.render_as_string(hide_password=True)!r}: {reason}"

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
            shown = self.engine.url.render_as_string(hide_password=True)
            raise StorageError(f"migration failed on {shown}: {e}") from e

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
            raise StorageError(f"cannot reach the database: {e}") from e
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
