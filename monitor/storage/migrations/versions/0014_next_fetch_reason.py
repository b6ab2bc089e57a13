"""feeds.next_fetch_reason and feeds.next_fetch_delay_s: why a feed's next fetch is when it is (configured or
adaptive interval, Cache-Control max-age, RSS ttl, backoff, Retry-After), recorded where the poller decides
it, so `monitor feeds` and the Flux page explain a far-off fetch instead of guessing.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("feeds", sa.Column("next_fetch_reason", sa.String(16)))
    op.add_column("feeds", sa.Column("next_fetch_delay_s", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.drop_column("next_fetch_delay_s")
        batch.drop_column("next_fetch_reason")
