"""The story_terms index: candidate stories for a new article come from an index, not a scan of every
active story. Existing stories are indexed from their stored centroids.

Revision ID: 0004
Revises: 0003
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEX_TERMS = 30  # StoryParams.index_terms at the time of this migration
WEEK = 7 * 86400


def upgrade() -> None:
    story_terms = op.create_table(
        "story_terms",
        sa.Column("story_id", sa.Integer(), nullable=False),
        sa.Column("term", sa.String(length=64), nullable=False),
        sa.Column("week", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("first_published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["story_id"], ["stories.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("story_id", "term"),
    )
    op.create_index("ix_story_terms_term_week", "story_terms", ["term", "week"])
    bind = op.get_bind()
    stories = bind.execute(
        sa.text("SELECT id, centroid, first_published_at, last_published_at FROM stories WHERE article_count > 0")
    )
    rows = []
    for story_id, centroid, first, last in stories:
        terms = json.loads(centroid) if isinstance(centroid, str) else (centroid or {})
        first, last = _utc(first), _utc(last)
        week = int(first.timestamp() // WEEK)
        for term, weight in sorted(terms.items(), key=lambda kv: (-kv[1], kv[0]))[:INDEX_TERMS]:
            rows.append(
                {
                    "story_id": story_id,
                    "term": term,
                    "week": week,
                    "weight": weight,
                    "first_published_at": first,
                    "last_published_at": last,
                }
            )
    if rows:
        op.bulk_insert(story_terms, rows)


def _utc(moment: str | datetime) -> datetime:
    """SQLite hands back naive UTC text, PostgreSQL an aware datetime."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def downgrade() -> None:
    op.drop_index("ix_story_terms_term_week", table_name="story_terms")
    op.drop_table("story_terms")
