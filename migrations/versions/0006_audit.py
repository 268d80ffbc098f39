"""audit trail; API keys gain an expiry and a last-used time

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXED = ("at", "actor_id", "action", "target_type")


def upgrade() -> None:
    op.create_table(
        "auditevent",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        # No foreign key: the trail outlives whatever it names.
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("actor_email", sa.String(length=255), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for name in INDEXED:
        op.create_index(f"ix_auditevent_{name}", "auditevent", [name], unique=False)
    op.add_column("apikey", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("apikey", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("apikey") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
    for name in reversed(INDEXED):
        op.drop_index(f"ix_auditevent_{name}", table_name="auditevent")
    op.drop_table("auditevent")
