"""Alembic environment: runs on the engine monitor.storage hands over (no URL in alembic.ini).

On SQLite, altering a table means rebuilding it (batch mode), which foreign-key enforcement would refuse
while other tables point at it; enforcement is off during migrations and back on afterwards.
"""

from alembic import context

from monitor.storage import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
            context.run_migrations()
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
