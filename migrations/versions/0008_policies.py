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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ADMIT_FUNCTION)


# A policy admission in one round trip on PostgreSQL (see app/services/llm/counters.py):
# token counts read against their limits, then request counts taken, all or nothing (the
# exception block undoes the takes before a refused one). Returns the refused index or -1.
ADMIT_FUNCTION = """
CREATE FUNCTION policy_admit(
    read_keys text[], read_limits bigint[], take_keys text[], take_limits bigint[],
    take_expires float8[]
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    reads integer := coalesce(array_length(read_keys, 1), 0);
    refused integer := -1;
    counted bigint;
BEGIN
    FOR r IN 1 .. reads LOOP
        IF coalesce((SELECT n FROM policycounter WHERE key = read_keys[r]), 0)
                >= read_limits[r] THEN
            RETURN r - 1;
        END IF;
    END LOOP;
    BEGIN
        FOR t IN 1 .. coalesce(array_length(take_keys, 1), 0) LOOP
            counted := NULL;
            INSERT INTO policycounter (key, n, expires_at)
                VALUES (take_keys[t], 1, take_expires[t])
                ON CONFLICT (key) DO UPDATE SET n = policycounter.n + 1
                WHERE policycounter.n < take_limits[t]
                RETURNING n INTO counted;
            IF counted IS NULL THEN
                refused := reads + t - 1;
                RAISE EXCEPTION 'policy_refused';
            END IF;
        END LOOP;
    EXCEPTION WHEN raise_exception THEN
        RETURN refused;
    END;
    RETURN -1;
END
$$
"""


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS policy_admit")
    op.drop_index("ix_policylease_expires_at", table_name="policylease")
    op.drop_table("policylease")
    op.drop_index("ix_policycounter_expires_at", table_name="policycounter")
    op.drop_table("policycounter")
    with op.batch_alter_table("apikey") as batch:
        batch.drop_column("policy")
    with op.batch_alter_table("user") as batch:
        batch.drop_column("policy")
