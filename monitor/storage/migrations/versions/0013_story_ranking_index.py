"""An index in the order stories are ranked (outlets, then most recent coverage), on the stories that have
articles: the stories page and /api/stories read their first page from it instead of sorting every story
(478-583 ms at 1M articles, benchmarks/web_latency.py). And an index on story_events.other_story_id: a story
page shows the events on either side of it.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    listed = sa.text("article_count > 0")
    op.create_index(
        "ix_stories_ranking",
        "stories",
        [sa.text("outlet_count DESC"), sa.text("last_published_at DESC"), "id"],
        postgresql_where=listed,
        sqlite_where=listed,
    )
    op.create_index("ix_story_events_other_story_id", "story_events", ["other_story_id"])


def downgrade() -> None:
    op.drop_index("ix_story_events_other_story_id", table_name="story_events")
    op.drop_index("ix_stories_ranking", table_name="stories")
