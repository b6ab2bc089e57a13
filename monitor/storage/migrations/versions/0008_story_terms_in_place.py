"""story_terms rows are updated in place, not deleted and inserted again each time their story changes.

The lookup index no longer holds the weight (an update that changes an indexed column leaves a new index
entry and a dead one behind), the table keeps room on its pages for the new versions (PostgreSQL's
fillfactor: updates stay on the page, "heap-only", and the dead versions are pruned by the next reader),
and the two date columns nothing read are gone (the last date changed with every article).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_story_terms_lookup", table_name="story_terms")
    with op.batch_alter_table("story_terms") as batch:
        batch.drop_column("first_published_at")
        batch.drop_column("last_published_at")
    op.create_index("ix_story_terms_lookup", "story_terms", ["term", "week", "story_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE story_terms SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE story_terms RESET (fillfactor)")
    op.drop_index("ix_story_terms_lookup", table_name="story_terms")
    with op.batch_alter_table("story_terms") as batch:
        batch.add_column(sa.Column("first_published_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_published_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE story_terms SET"
        " first_published_at = (SELECT first_published_at FROM stories WHERE stories.id = story_terms.story_id),"
        " last_published_at = (SELECT last_published_at FROM stories WHERE stories.id = story_terms.story_id)"
    )
    with op.batch_alter_table("story_terms") as batch:
        batch.alter_column("first_published_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.alter_column("last_published_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index("ix_story_terms_lookup", "story_terms", ["term", "week", "story_id", "weight"])
