"""The story_terms lookup index covers the columns the lookup reads (story, weight), so at a million
articles a lookup is an index-only scan instead of thousands of scattered table reads.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_story_terms_lookup", "story_terms", ["term", "week", "story_id", "weight"])
    op.drop_index("ix_story_terms_term_week", table_name="story_terms")


def downgrade() -> None:
    op.create_index("ix_story_terms_term_week", "story_terms", ["term", "week"])
    op.drop_index("ix_story_terms_lookup", table_name="story_terms")
