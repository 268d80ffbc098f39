"""loginthrottle: login attempts per account and per client, shared by every worker

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "loginthrottle",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("window_ends_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_loginthrottle_window_ends_at", "loginthrottle", ["window_ends_at"])


def downgrade() -> None:
    op.drop_index("ix_loginthrottle_window_ends_at", table_name="loginthrottle")
    op.drop_table("loginthrottle")
