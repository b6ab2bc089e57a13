"""story_events: the history of live regrouping (articles moved, stories split off and merged), and
articles.term_counts, which regrouping weighs again with the current document frequencies.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("articles", sa.Column("term_counts", sa.JSON))
    op.create_table(
        "story_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("story_id", sa.Integer, sa.ForeignKey("stories.id", ondelete="CASCADE"), nullable=False),
        sa.Column("other_story_id", sa.Integer, sa.ForeignKey("stories.id", ondelete="SET NULL")),
        sa.Column("article_id", sa.Integer, sa.ForeignKey("articles.id", ondelete="CASCADE")),
        sa.Column("score", sa.Float),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_story_events_at", "story_events", ["at"])
    op.create_index("ix_story_events_story_id", "story_events", ["story_id"])


def downgrade() -> None:
    op.drop_table("story_events")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("term_counts")
