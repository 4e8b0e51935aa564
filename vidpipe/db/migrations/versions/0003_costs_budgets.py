"""Costs and budgets (docs/costs.md).

`projects` gains what a job cost: `estimated_cost_usd` (at submission), `cost_usd` (at its end)
and `price_version` (the price table both come from). Two ledger tables hold the budgets:
`budget_buckets` (per budget, period and metadata value: what is spent, committed and reserved,
in micro-dollars) and `budget_reservations` (per request and bucket: what it reserved, then what
it cost). On PostgreSQL row-level security is switched on for both, with the same
`service_role` policy as the other ledger tables where Supabase's roles exist.

Revision ID: 0003_costs_budgets
Revises: 0002_owner_rls
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_costs_budgets"
down_revision: str | None = "0002_owner_rls"
branch_labels = None
depends_on = None

_TABLES = ("budget_buckets", "budget_reservations")

_POLICIES = """
DO $vidpipe$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon')
        AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated')
        AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role')
    THEN
        REVOKE ALL ON public.budget_buckets, public.budget_reservations
            FROM anon, authenticated;
        GRANT ALL ON public.budget_buckets, public.budget_reservations TO service_role;
        DROP POLICY IF EXISTS vidpipe_service_role_all ON public.budget_buckets;
        CREATE POLICY vidpipe_service_role_all ON public.budget_buckets
            FOR ALL TO service_role USING (true) WITH CHECK (true);
        DROP POLICY IF EXISTS vidpipe_service_role_all ON public.budget_reservations;
        CREATE POLICY vidpipe_service_role_all ON public.budget_reservations
            FOR ALL TO service_role USING (true) WITH CHECK (true);
    END IF;
END
$vidpipe$
"""


def upgrade() -> None:
    postgresql = op.get_context().dialect.name == "postgresql"
    exists = True if postgresql else None
    op.add_column("projects", sa.Column("estimated_cost_usd", sa.Float), if_not_exists=exists)
    op.add_column("projects", sa.Column("cost_usd", sa.Float), if_not_exists=exists)
    op.add_column("projects", sa.Column("price_version", sa.String(32)), if_not_exists=exists)
    op.create_table(
        "budget_buckets",
        sa.Column("bucket", sa.String(255), primary_key=True),
        sa.Column("spent_micros", sa.BigInteger, nullable=False),
        sa.Column("limit_micros", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "budget_reservations",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("bucket", sa.String(255), primary_key=True),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )
    if postgresql:
        for table in _TABLES:
            op.execute(f"ALTER TABLE public.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(_POLICIES)


def downgrade() -> None:
    op.drop_table("budget_reservations")
    op.drop_table("budget_buckets")
    op.drop_column("projects", "price_version")
    op.drop_column("projects", "cost_usd")
    op.drop_column("projects", "estimated_cost_usd")
