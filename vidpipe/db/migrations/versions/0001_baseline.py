"""The schema vidpipe 0.1 creates with `create_all`: projects, events, submissions, slots.

Frozen here (never imported from `tables.py`, which moves on). Every statement is
`IF NOT EXISTS`, so a database the 0.1 release made is adopted as it is, rows and all; a
database from before 0.1 gains the nullable columns it lacks, as 0.1's start-up did.

Revision ID: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision: str | None = None
branch_labels = None
depends_on = None


def _columns() -> dict[str, list[sa.Column[object]]]:
    # Fresh Column objects per call: SQLAlchemy binds a column to the one table it is put in.
    return {
        "projects": [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("request_id", sa.String(128), nullable=False, unique=True),
            sa.Column("parent_request_id", sa.String(128)),
            sa.Column("prompt", sa.Text),
            sa.Column("input_image_url", sa.Text),
            sa.Column("output_image_url", sa.Text),
            sa.Column("status", sa.String(32), nullable=False),
            sa.Column("progress", sa.Integer),
            sa.Column("provider", sa.String(64)),
            sa.Column("model", sa.String(128)),
            sa.Column("sora_job_id", sa.String(256)),
            sa.Column("sora_generation_id", sa.String(256)),
            sa.Column("azure_endpoint", sa.String(256)),
            sa.Column("attempted_download_at", sa.DateTime(timezone=True)),
            sa.Column("error_message", sa.Text),
            sa.Column("placeholder", sa.Boolean, nullable=False),
            sa.Column("video_size_bytes", sa.BigInteger),
            sa.Column("video_sha256", sa.String(64)),
            sa.Column("expires_at", sa.DateTime(timezone=True)),
            sa.Column("user_message", sa.Text),
            sa.Column("retry_attempts", sa.Integer),
            sa.Column("next_retry_at", sa.DateTime(timezone=True)),
            sa.Column("failover_request_id", sa.String(128)),
            sa.Column("metadata", sa.JSON),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        ],
        "events": [
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("event_id", sa.String(36), nullable=False, unique=True),
            sa.Column("request_id", sa.String(128), nullable=False),
            sa.Column("event_type", sa.String(64), nullable=False),
            sa.Column("topic", sa.String(255), nullable=False),
            sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("payload", sa.JSON, nullable=False),
        ],
        "submissions": [
            sa.Column("request_id", sa.String(128), primary_key=True),
            sa.Column("provider", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("provider_job_id", sa.String(256)),
            sa.Column("endpoint_host", sa.String(256)),
            sa.Column("model", sa.String(128)),
            sa.Column("intent_at", sa.DateTime(timezone=True)),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        ],
        "provider_slots": [
            sa.Column("provider", sa.String(64), primary_key=True),
            sa.Column("in_use", sa.Integer, nullable=False),
        ],
    }


_INDEXES = {
    "ix_projects_parent_request_id": ("projects", "parent_request_id"),
    "ix_events_request_id": ("events", "request_id"),
}


def upgrade() -> None:
    for table, columns in _columns().items():
        op.create_table(table, *columns, if_not_exists=True)
    for index, (table, column) in _INDEXES.items():
        op.create_index(index, table, [column], if_not_exists=True)
    _add_missing_nullable_columns()


def _add_missing_nullable_columns() -> None:
    context = op.get_context()
    nullable = {
        table: [(c.name, c.type) for c in columns if c.nullable and not c.primary_key]
        for table, columns in _columns().items()
    }
    if context.dialect.name == "postgresql":
        # One idempotent statement per table, the same online and in the rendered SQL.
        for table, columns in nullable.items():
            if columns:
                clauses = ",\n    ".join(
                    f"ADD COLUMN IF NOT EXISTS {name} {kind.compile(dialect=context.dialect)}"
                    for name, kind in columns
                )
                op.execute(f"ALTER TABLE {table}\n    {clauses}")
    elif not context.as_sql:
        # SQLite's ALTER TABLE has no IF NOT EXISTS: look first.
        inspector = sa.inspect(op.get_bind())
        for table, columns in nullable.items():
            existing = {c["name"] for c in inspector.get_columns(table)}
            for name, kind in columns:
                if name not in existing:
                    op.add_column(table, sa.Column(name, kind))


def downgrade() -> None:
    for table in ("provider_slots", "submissions", "events", "projects"):
        op.drop_table(table)
