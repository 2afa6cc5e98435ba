"""The campaign report reads its conversion bounds and its people with triggered sends from small indexes

ix_deliveries_sent holds a campaign's send times (the report's conversion window bounds are their
min and max), ix_deliveries_not_run (partial) the people with a delivery not keyed by its run,
none in a scheduled campaign. ix_deliveries_campaign (campaign_id, target_index, variant) goes:
no query needs more of it than ix_deliveries_report (campaign_id first) gives.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NOT_RUN_KEY = sa.text("dedupe_key NOT LIKE 'run:%'")


def upgrade() -> None:
    op.create_index("ix_deliveries_sent", "deliveries", ["campaign_id", "sent_at"])
    op.create_index("ix_deliveries_not_run", "deliveries", ["campaign_id", "user_id"],
                    postgresql_where=NOT_RUN_KEY, sqlite_where=NOT_RUN_KEY)
    op.drop_index("ix_deliveries_campaign", "deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_campaign", "deliveries", ["campaign_id", "target_index", "variant"])
    op.drop_index("ix_deliveries_not_run", "deliveries")
    op.drop_index("ix_deliveries_sent", "deliveries")
