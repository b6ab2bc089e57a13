"""Outlets from configuration, the page's own site name beside it, why a canonical link was not used,
and leases that name their worker.

- feeds.outlet: the outlet a feed's articles are credited to (feeds.yaml `outlet:`, else its name).
- articles.site_name: the site name the page declares (articles.source is the feed's outlet).
- articles.canonical_note: why the page's declared canonical link was not taken as its URL.
- feeds.lease_owner, feed_items.lease_owner: the worker holding the lease; only it may settle.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.add_column(sa.Column("outlet", sa.String(200), nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(32), nullable=True))
    op.execute("UPDATE feeds SET outlet = name")
    with op.batch_alter_table("feed_items") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(32), nullable=True))
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("site_name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("canonical_note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("canonical_note")
        batch.drop_column("site_name")
    with op.batch_alter_table("feed_items") as batch:
        batch.drop_column("lease_owner")
    with op.batch_alter_table("feeds") as batch:
        batch.drop_column("lease_owner")
        batch.drop_column("outlet")
