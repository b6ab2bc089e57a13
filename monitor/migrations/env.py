"""Alembic environment: runs on the engine monitor.storage hands over (no URL in alembic.ini)."""

from alembic import context

from monitor.storage import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
