"""Providers' webhooks (docs/providers.md, "Providers' webhooks").

A webhook names the provider's job, not the request: `projects` gains an index on
(provider, sora_job_id) so the gateway finds the request without scanning the table.

Revision ID: 0005_provider_job_index
Revises: 0004_failover_path
"""

from __future__ import annotations

from alembic import op

revision = "0005_provider_job_index"
down_revision: str | None = "0004_failover_path"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_projects_provider_job", "projects", ["provider", "sora_job_id"], if_not_exists=True
    )


def downgrade() -> None:
    op.drop_index("ix_projects_provider_job", table_name="projects")
