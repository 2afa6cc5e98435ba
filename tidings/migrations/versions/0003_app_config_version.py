"""apps.config_version: invalidates per-process snapshots of running campaigns and hooks

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch_op:
        batch_op.add_column(sa.Column("config_version", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch_op:
        batch_op.drop_column("config_version")
