"""llmsettings: models for OpenRouter, Ollama and Bedrock, and the fallback chain

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MODEL_COLUMNS = ("openrouter_model", "ollama_model", "bedrock_model")


def upgrade() -> None:
    for name in MODEL_COLUMNS:
        op.add_column("llmsettings", sa.Column(name, sa.String(length=200), nullable=True))
    # The server default fills the row that may exist already (SQLite and PostgreSQL both
    # accept a NOT NULL column added with a default).
    op.add_column(
        "llmsettings",
        sa.Column("fallback_providers", sa.JSON(), nullable=False, server_default="[]"),
    )


def downgrade() -> None:
    with op.batch_alter_table("llmsettings") as batch:
        batch.drop_column("fallback_providers")
        for name in reversed(MODEL_COLUMNS):
            batch.drop_column(name)
