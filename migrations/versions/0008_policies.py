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
        op.execute(GRANT_FUNCTION)


# Policy admissions in one round trip on PostgreSQL (see app/services/llm/counters.py):
# `wanted` calls with the same checks at once. Token counts are read against their limits
# (one at its limit refuses them all), then each request counter is locked (created at 0 if
# new) and the calls granted are as many as every counter has room for; only those are
# counted. Returns {granted, index of the check that refused the rest or -1}. No exception
# block (a subtransaction per call): nothing is written before every room is known.
GRANT_FUNCTION = """
CREATE FUNCTION policy_grant(
    read_keys text[], read_limits bigint[], take_keys text[], take_limits bigint[],
    take_expires float8[], wanted integer
) RETURNS integer[] LANGUAGE plpgsql AS $$
DECLARE
    reads integer := coalesce(array_length(read_keys, 1), 0);
    granted bigint := wanted;
    refused integer := -1;
    counted bigint;
BEGIN
    FOR r IN 1 .. reads LOOP
        IF coalesce((SELECT n FROM policycounter WHERE key = read_keys[r]), 0)
                >= read_limits[r] THEN
            RETURN ARRAY[0, r - 1];
        END IF;
    END LOOP;
    FOR t IN 1 .. coalesce(array_length(take_keys, 1), 0) LOOP
        INSERT INTO policycounter (key, n, expires_at)
            VALUES (take_keys[t], 0, take_expires[t])
            ON CONFLICT (key) DO NOTHING;
        SELECT n INTO counted FROM policycounter WHERE key = take_keys[t] FOR UPDATE;
        IF take_limits[t] - counted < granted THEN
            granted := greatest(take_limits[t] - counted, 0);
            refused := reads + t - 1;
        END IF;
    END LOOP;
    IF granted > 0 THEN
        UPDATE policycounter SET n = n + granted WHERE key = ANY(take_keys);
    END IF;
    RETURN ARRAY[granted::integer, refused];
END
$$
"""


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS policy_grant")
    op.drop_index("ix_policylease_expires_at", table_name="policylease")
    op.drop_table("policylease")
    op.drop_index("ix_policycounter_expires_at", table_name="policycounter")
    op.drop_table("policycounter")
    with op.batch_alter_table("apikey") as batch:
        batch.drop_column("policy")
    with op.batch_alter_table("user") as batch:
        batch.drop_column("policy")
