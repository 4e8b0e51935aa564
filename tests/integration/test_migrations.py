"""The schema as migrations: Supabase's copy, a fresh database, an upgrade from 0.1's tables.

`vidpipe/db/migrations/versions/` is the one source; `supabase/migrations/*.sql` is its SQL
rendering (kept identical here), applied by `supabase db push`; every vidpipe process applies
the same revisions with Alembic on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import GenerationRequested, JobSubmitted, derive_event_id
from tests.integration.supabase_roles import create_supabase_roles
from vidpipe.db.migrate import (
    current_revision,
    head_revision,
    render_sql,
    revisions,
    supabase_file_name,
)
from vidpipe.db.records import Records
from vidpipe.db.tables import metadata, open_engine

SUPABASE_MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
TABLES = ("projects", "events", "submissions", "provider_slots")


def _fresh_database(postgres_url: str) -> str:
    """A new database on the session's server; its libpq URL."""
    name = f"mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(postgres_url).set(database=name).render_as_string(hide_password=False)


async def _schema_differences(engine: AsyncEngine) -> list[Any]:
    def compare(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = compare_metadata(context, metadata)
        return [d for d in diffs if not (d[0] == "remove_table" and d[1].name == "alembic_version")]

    async with engine.connect() as conn:
        return await conn.run_sync(compare)


def test_the_supabase_migrations_are_the_rendered_revisions() -> None:
    expected = {
        supabase_file_name(index, rev.id): render_sql(rev.id)
        for index, rev in enumerate(revisions(), start=1)
    }
    shipped = {path.name: path.read_text() for path in SUPABASE_MIGRATIONS.glob("*.sql")}
    # On a mismatch: python -m vidpipe.db.migrate (rewrites supabase/migrations/).
    assert shipped == expected
    assert sorted(shipped) == list(expected)  # name order is the order supabase applies them


async def test_the_supabase_files_applied_in_order_give_the_schema_with_rls(
    postgres_url: str,
) -> None:
    url = _fresh_database(postgres_url)
    create_supabase_roles(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for path in sorted(SUPABASE_MIGRATIONS.glob("*.sql")):
            conn.execute(path.read_text().encode())  # as `supabase db push` sends a file
        secured = conn.execute(
            "SELECT relname FROM pg_class WHERE relrowsecurity AND relname = ANY(%s)",
            (list(TABLES),),
        ).fetchall()
        policies = conn.execute("SELECT tablename, policyname FROM pg_policies").fetchall()
    assert sorted(r[0] for r in secured) == sorted(TABLES)
    assert ("projects", "vidpipe_owner_reads") in policies
    assert ("events", "vidpipe_owner_reads") in policies
    engine = await open_engine(url, create=False)
    try:
        assert await _schema_differences(engine) == []
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return _fresh_database(request.getfixturevalue("postgres_url"))


async def test_a_fresh_database_is_migrated_to_the_tables_the_code_uses(
    database_url: str,
) -> None:
    engine = await open_engine(database_url)
    try:
        assert await current_revision(engine) == head_revision()
        assert await _schema_differences(engine) == []
        await open_engine(database_url)  # a second start finds nothing to do
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


#: What later revisions added (0002: owner_id; 0003: costs and budgets; 0004: failover_path).
_COLUMNS_AFTER_0_1 = {
    ("projects", "owner_id"),
    ("projects", "estimated_cost_usd"),
    ("projects", "cost_usd"),
    ("projects", "price_version"),
    ("projects", "failover_path"),
}
_TABLES_AFTER_0_1 = {"budget_buckets", "budget_reservations"}


def _release_0_1_metadata() -> sa.MetaData:
    """The tables vidpipe 0.1 made with create_all: today's, without what came after."""
    old = sa.MetaData()
    for table in metadata.sorted_tables:
        if table.name in _TABLES_AFTER_0_1:
            continue
        columns = [
            sa.Column(
                c.name,
                c.type,
                primary_key=c.primary_key,
                nullable=c.nullable,
                unique=c.unique,
                index=c.index,
                autoincrement=c.autoincrement,
            )
            for c in table.columns
            if (table.name, c.name) not in _COLUMNS_AFTER_0_1
        ]
        extra = [sa.Index(i.name, *[c.name for c in i.columns]) for i in table.indexes if i.name]
        extra = [i for i in extra if i.name == "ix_events_request_id"]
        sa.Table(table.name, old, *columns, *extra)
    return old


async def test_an_existing_0_1_database_with_rows_is_upgraded_in_place(database_url: str) -> None:
    engine = await open_engine(database_url, create=False)
    old = _release_0_1_metadata()
    now = datetime.now(UTC)
    rid = f"old-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.run_sync(old.create_all)
        await conn.execute(
            old.tables["projects"]
            .insert()
            .values(
                request_id=rid,
                status="submitted",
                placeholder=False,
                prompt="a fox",
                created_at=now,
                updated_at=now,
            )
        )
        await conn.execute(
            old.tables["events"]
            .insert()
            .values(
                event_id=str(uuid.uuid4()),
                request_id=rid,
                event_type="GenerationRequested",
                topic="t",
                occurred_at=now,
                recorded_at=now,
                payload={"request_id": rid},
            )
        )
    await engine.dispose()

    engine = await open_engine(database_url)
    try:
        assert await current_revision(engine) == head_revision()
        assert await _schema_differences(engine) == []
        records = Records(engine)
        kept = await records.get(rid)
        assert kept is not None and kept.status == "submitted" and kept.prompt == "a fox"
        submitted = JobSubmitted(
            event_id=derive_event_id(rid, "JobSubmitted"),
            request_id=rid,
            provider="azure-sora",
            provider_job_id="task_9",
        )
        assert await records.record(submitted, "t.job.submitted")
        view = await records.get(rid)
        assert view is not None and view.sora_job_id == "task_9"
        new = GenerationRequested.model_validate(
            {"request_id": f"{rid}-new", "prompt": "p", "metadata": {"user_id": "u-1"}}
        )
        assert await records.record(new, "t.generation.requested")
        async with engine.connect() as conn:
            owner = await conn.scalar(
                sa.select(metadata.tables["projects"].c.owner_id).where(
                    metadata.tables["projects"].c.request_id == f"{rid}-new"
                )
            )
        assert owner == "u-1"
    finally:
        await engine.dispose()
