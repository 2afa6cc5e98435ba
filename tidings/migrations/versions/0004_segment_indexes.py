"""Indexes for device conditions; the events dedupe index only over events that carry an id

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

HAS_ID = sa.text("client_event_id IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_devices_app_platform_user", "devices", ["app_id", "platform", "user_id"])
    op.create_index("ix_devices_app_app_version_user", "devices", ["app_id", "app_version_key", "user_id"])
    op.create_index("ix_devices_app_os_version_user", "devices", ["app_id", "os_version_key", "user_id"])
    op.create_index("uq_events_app_client_event_id", "events", ["app_id", "client_event_id"], unique=True,
                    postgresql_where=HAS_ID, sqlite_where=HAS_ID)
    with op.batch_alter_table("events") as batch_op:
        batch_op.drop_constraint("uq_events_app_id_client_event_id", type_="unique")


def downgrade() -> None:
    with op.batch_alter_table("events") as batch_op:
        batch_op.create_unique_constraint("uq_events_app_id_client_event_id", ["app_id", "client_event_id"])
    op.drop_index("uq_events_app_client_event_id", "events")
    op.drop_index("ix_devices_app_os_version_user", "devices")
    op.drop_index("ix_devices_app_app_version_user", "devices")
    op.drop_index("ix_devices_app_platform_user", "devices")
