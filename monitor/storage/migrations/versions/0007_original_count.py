"""stories.original_count: the articles a story's centroid sums (near-copies are not), which the average
member similarity divides by; counting reprints under-scored stories carried by wire copy.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stories") as batch:
        batch.add_column(sa.Column("original_count", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE stories SET original_count = (SELECT COUNT(*) FROM articles"
        " WHERE articles.story_id = stories.id AND articles.duplicate_of_id IS NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("stories") as batch:
        batch.drop_column("original_count")
