"""Ingesting events writes less: last_seen_at moves in place, events check their user only

`last_seen_at` moves on almost every event batch. With ix_users_app_last_seen gone and room left
on each users page (fillfactor 90), that update is a heap-only (HOT) update: none of the users
indexes (the GIN over attributes among them) gets a new entry. On this machine it took the
ingest statement from 51 to 37 ms per 1,000 events. The one reader of that index, the people
list, now finds the recently seen through ix_events_app_name_time_user
(segments.service.recently_seen).

fk_events_app_id_apps goes: an event's app is its user's app (ingest_events only ever stores
events of users it looked up in that app), and deleting an app still takes its events with it,
through users. Its per-row check cost ~4 us an event.

Existing users pages get their free space as rows are updated; nothing is rewritten here.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

USERS_FILLFACTOR = 90


def upgrade() -> None:
    op.drop_index("ix_users_app_last_seen", "users")
    with op.batch_alter_table("events") as batch_op:  # SQLite rebuilds the table, PostgreSQL alters it
        batch_op.drop_constraint("fk_events_app_id_apps", type_="foreignkey")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE users SET (fillfactor = {USERS_FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE users RESET (fillfactor)")
    with op.batch_alter_table("events") as batch_op:
        batch_op.create_foreign_key("fk_events_app_id_apps", "apps", ["app_id"], ["id"], ondelete="CASCADE")
    op.create_index("ix_users_app_last_seen", "users", ["app_id", "last_seen_at"])
