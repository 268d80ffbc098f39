"""policies: per-user and per-key policy, and the shared counters that enforce it

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user") as batch:
        batch.add_column(sa.Column("policy", sa.JSON(), nullable=True))
    with op.batch_alter_table("apikey") as batch:
        batch.add_column(sa.Column("policy", sa.JSON(), nullable=True))
    op.create_table(
        "policycounter",
        sa.Column("key", sa.String(length=120), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_policycounter_expires_at", "policycounter", ["expires_at"])
    op.create_table(
        "policylease",
        sa.Column("key", sa.String(length=120), primary_key=True),
        sa.Column("lease_id", sa.String(length=40), primary_key=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_policylease_expires_at", "policylease", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_policylease_expires_at", table_name="policylease")
    op.drop_table("policylease")
    op.drop_index("ix_policycounter_expires_at", table_name="policycounter")
    op.drop_table("policycounter")
    with op.batch_alter_table("apikey") as batch:
        batch.drop_column("policy")
    with op.batch_alter_table("user") as batch:
        batch.drop_column("policy")
