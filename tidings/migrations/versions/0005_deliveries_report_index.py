"""ix_deliveries_report: the campaign report reads a campaign's deliveries in person order from the index alone

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_report", "deliveries",
                    ["campaign_id", "user_id", "target_index", "control", "run_id", "variant"],
                    postgresql_include=["status", "sent_at", "dedupe_key", "id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_report", "deliveries")
