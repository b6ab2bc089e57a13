"""digest_run_stories: the stories each sent digest carried, at their rank, so a story shows which
e-mails told readers about it.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digest_run_stories",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("digest_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("story_id", sa.Integer(), sa.ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("rank", sa.Integer(), nullable=False),
    )
    op.create_index("ix_digest_run_stories_story_id", "digest_run_stories", ["story_id"])


def downgrade() -> None:
    op.drop_index("ix_digest_run_stories_story_id", table_name="digest_run_stories")
    op.drop_table("digest_run_stories")
