"""Event rollups: per person and event name, the first and last time and the count

"did X" (ever) over 1M people read every X event ever stored: 2.2M index entries, hashed, for
one segment size (the churn-like bench query took 2.2 s). event_rollups holds one row per
person and event name for the events up to a mark; "did X" reads those rows plus the events
after the mark (segments.rollups). They are written by a job every minute, never on ingest:
summing on ingest cost POST /events 28-35% of its throughput (measured).

No foreign keys: checking them cost the job about half its time (26-32 -> 12-16 us an
event); erase_user deletes a person's rows and never overlaps a rollup (an advisory lock).

Existing events are summed by the first run of the job (`tidings events rollup`), in chunks.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from tidings.db import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_rollups",
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("first_at", UTCDateTime(), nullable=False),
        sa.Column("last_at", UTCDateTime(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "name", name="pk_event_rollups"),
    )
    op.create_index("ix_event_rollups_app_name_last_user", "event_rollups", ["app_id", "name", "last_at", "user_id"])
    op.create_table(
        "event_rollup_marks",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("upto", sa.BigInteger(), nullable=False),
        sa.Column("rolled_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_rollup_marks"),
    )


def downgrade() -> None:
    op.drop_table("event_rollup_marks")
    op.drop_index("ix_event_rollups_app_name_last_user", "event_rollups")
    op.drop_table("event_rollups")
