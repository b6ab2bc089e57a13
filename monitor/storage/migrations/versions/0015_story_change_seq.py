"""stories.change_seq: the number of the locked transaction that last changed a story (meta
``story_changes`` counts them). Placement reads and decides without the cluster lock, then under it asks
which stories changed since the number it started from: only those it read, or that share its terms, make
it decide again. Indexed: that question reads the few stories changed since.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stories", sa.Column("change_seq", sa.BigInteger, nullable=False, server_default="0"))
    op.create_index("ix_stories_change_seq", "stories", ["change_seq"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ANALYZE stories")  # or the planner guesses a third of the rows changed, and scans them all


def downgrade() -> None:
    op.drop_index("ix_stories_change_seq", table_name="stories")
    with op.batch_alter_table("stories") as batch:
        batch.drop_column("change_seq")
