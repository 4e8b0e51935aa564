"""Failover chains (docs/providers.md, "Failover chains").

`projects` gains `failover_path`: the providers a request's lineage went through, in order and
comma-separated (`azure-sora,gemini,fal`), on the first request's row and on each child's.

Revision ID: 0004_failover_path
Revises: 0003_costs_budgets
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_failover_path"
down_revision: str | None = "0003_costs_budgets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    exists = True if op.get_context().dialect.name == "postgresql" else None
    op.add_column("projects", sa.Column("failover_path", sa.String(512)), if_not_exists=exists)


def downgrade() -> None:
    op.drop_column("projects", "failover_path")
