"""llmsettings: each provider's embedding model

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = tuple(
    f"{provider}_embedding_model"
    for provider in ("lmstudio", "openai", "openrouter", "ollama", "bedrock")
)


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("llmsettings", sa.Column(name, sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("llmsettings") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
