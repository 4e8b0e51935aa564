"""Row-level security on a real PostgreSQL with Supabase's roles and `auth.uid()`.

A request's owner is its `metadata.user_id`. PostgREST runs each front-end query as
`authenticated` (or `anon`) with the JWT's claims in `request.jwt.claims`; this test does the
same with SET ROLE and set_config, and checks who sees which rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

from schemas.events import GenerationRequested, JobSubmitted, derive_event_id
from tests.integration.supabase_roles import create_supabase_roles
from tests.integration.test_migrations import _fresh_database
from vidpipe.db.records import Records
from vidpipe.db.tables import open_engine

pytestmark = pytest.mark.postgres

ALICE, BOB, CAROL = (str(uuid.uuid4()) for _ in range(3))


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[str]:
    """A fresh database with Supabase's roles, migrated, with rows of Alice, Bob and no one."""
    url = _fresh_database(postgres_url)
    create_supabase_roles(url)
    engine = await open_engine(url)
    records = Records(engine)
    for rid, owner in (("a-1", ALICE), ("a-2", ALICE), ("b-1", BOB), ("x-1", None)):
        meta = {"user_id": owner} if owner else {}
        request = GenerationRequested.model_validate(
            {"request_id": rid, "prompt": "p", "metadata": meta}
        )
        await records.record(request, "t.generation.requested")
        await records.record(
            JobSubmitted(
                event_id=derive_event_id(rid, "JobSubmitted"),
                request_id=rid,
                provider="azure-sora",
                provider_job_id=f"task-{rid}",
            ),
            "t.job.submitted",
        )
    await engine.dispose()
    yield url


@contextmanager
def acting_as(url: str, role: str, sub: str | None = None) -> Iterator[psycopg.Connection]:
    """A transaction as PostgREST runs one: SET LOCAL ROLE and the JWT claims."""
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        claims = json.dumps({"sub": sub, "role": role} if sub else {"role": role})
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))
        yield conn
        conn.rollback()


def _request_ids(conn: psycopg.Connection, table: str) -> list[str]:
    query = sql.SQL("SELECT DISTINCT request_id FROM {} ORDER BY 1").format(sql.Identifier(table))
    return [row[0] for row in conn.execute(query)]


def test_a_signed_in_user_reads_only_their_own_rows(database: str) -> None:
    with acting_as(database, "authenticated", ALICE) as conn:
        assert _request_ids(conn, "projects") == ["a-1", "a-2"]
        assert _request_ids(conn, "events") == ["a-1", "a-2"]
    with acting_as(database, "authenticated", BOB) as conn:
        assert _request_ids(conn, "projects") == ["b-1"]
        assert _request_ids(conn, "events") == ["b-1"]
    with acting_as(database, "authenticated", CAROL) as conn:
        assert _request_ids(conn, "projects") == []
        assert _request_ids(conn, "events") == []


def test_a_signed_in_user_cannot_write_or_see_the_ledger(database: str) -> None:
    with (
        acting_as(database, "authenticated", ALICE) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("UPDATE projects SET status = 'stored' WHERE request_id = 'a-1'")
    with (
        acting_as(database, "authenticated", ALICE) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT * FROM submissions")


@pytest.mark.parametrize("table", ["projects", "events", "submissions", "provider_slots"])
def test_anon_reads_nothing(database: str, table: str) -> None:
    with (
        acting_as(database, "anon") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))


def test_the_service_role_reads_and_writes_everything(database: str) -> None:
    with acting_as(database, "service_role") as conn:
        assert _request_ids(conn, "projects") == ["a-1", "a-2", "b-1", "x-1"]
        conn.execute("UPDATE projects SET status = 'stored' WHERE request_id = 'x-1'")
        status = conn.execute("SELECT status FROM projects WHERE request_id = 'x-1'").fetchone()
        assert status == ("stored",)
        conn.execute(
            "INSERT INTO projects (request_id, status, placeholder, created_at, updated_at)"
            " VALUES ('s-1', 'requested', false, now(), now())"
        )
