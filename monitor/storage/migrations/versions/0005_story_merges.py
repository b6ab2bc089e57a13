"""Stories merged by the periodic merge pass keep their row, pointing at the story that took them in.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stories") as batch:
        batch.add_column(sa.Column("merged_into_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("merge_score", sa.Float(), nullable=True))
        batch.create_foreign_key("fk_stories_merged_into_id_stories", "stories", ["merged_into_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("stories") as batch:
        batch.drop_constraint("fk_stories_merged_into_id_stories", type_="foreignkey")
        batch.drop_column("merge_score")
        batch.drop_column("merged_into_id")
