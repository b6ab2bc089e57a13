"""An index on stories.merged_into_id: a story page lists the stories merged into it, which was a scan of
every story (242 ms of a 251 ms story page at 1M articles, benchmarks/web_latency.py).

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_stories_merged_into_id", "stories", ["merged_into_id"])


def downgrade() -> None:
    op.drop_index("ix_stories_merged_into_id", table_name="stories")
