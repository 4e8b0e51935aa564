"""The records, the ledger and replay through PgBouncer in transaction mode.

Supabase's pooler on port 6543 runs in transaction mode: each transaction may get another
server connection, so a server-side prepared statement does not outlive it. The PostgreSQL
records, ledger and replay tests run here once more with `postgres_url` pointing through a
real PgBouncer (`LocalPgBouncer`, which discards every session after each transaction), and
the tests below show that the pooler really refuses what vidpipe must not rely on.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import GenerationRequested
from tests.integration.test_ledger_postgres import (  # noqa: F401 - run again through the pooler
    test_a_claim_is_stamped_by_the_ledgers_clock,
    test_an_intent_is_kept_from_the_first_create_and_jobs_held_are_known,
    test_concurrent_claims_never_exceed_the_quota,
)
from tests.integration.test_records_batch import (  # noqa: F401
    test_a_batch_holding_an_event_twice_records_it_once,
    test_batches_write_what_one_by_one_writes,
)
from tests.integration.test_records_postgres import (  # noqa: F401
    records,
    test_failover_child_links_its_video_to_the_parent,
    test_insert_ignore_tells_whether_a_row_went_in,
    test_the_same_event_twice_is_recorded_once,
)
from tests.integration.test_replay import (  # noqa: F401
    source,
    test_replayed_records_equal_the_source_projects,
)
from vidpipe.db.records import Records
from vidpipe.db.tables import open_engine, pooler_in_url
from vidpipe.dev.postgres import LocalPgBouncer
from vidpipe.dev.servers import PostgresHandle

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pgbouncer(postgres_handle: PostgresHandle) -> Iterator[LocalPgBouncer]:
    with LocalPgBouncer(postgres_handle.url) as bouncer:
        yield bouncer


@pytest.fixture
def postgres_url(pgbouncer: LocalPgBouncer) -> str:
    """The session's database, through the pooler: every imported test uses this one."""
    return pgbouncer.url


def _new_database(postgres_handle: PostgresHandle) -> str:
    name = f"pool_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_handle.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


@pytest.fixture
async def new_engine(
    pgbouncer: LocalPgBouncer, postgres_handle: PostgresHandle
) -> AsyncIterator[Callable[[], Any]]:
    """test_records_batch's fixture, PostgreSQL only: a fresh database, opened via the pooler."""
    opened: list[AsyncEngine] = []

    async def make() -> AsyncEngine:
        engine = await open_engine(pgbouncer.url_for(_new_database(postgres_handle)))
        opened.append(engine)
        return engine

    yield make
    for engine in opened:
        await engine.dispose()


def test_the_pooler_drops_prepared_statements_between_transactions(
    pgbouncer: LocalPgBouncer,
) -> None:
    # What happens to a client that keeps psycopg's default (prepare after 5 runs).
    with (
        psycopg.connect(pgbouncer.bare_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InvalidSqlStatementName),
    ):
        for n in range(10):
            conn.execute("SELECT %s::int", (n,))
    with psycopg.connect(pgbouncer.bare_url, autocommit=True, prepare_threshold=None) as conn:
        assert [conn.execute("SELECT %s::int", (n,)).fetchone() for n in range(10)][-1] == (9,)


async def test_an_engine_not_told_about_the_pooler_fails_and_one_told_works(
    pgbouncer: LocalPgBouncer, postgres_handle: PostgresHandle
) -> None:
    name = _new_database(postgres_handle)
    unaware = await open_engine(pgbouncer.bare_url_for(name))
    try:
        with pytest.raises(DBAPIError, match="prepared statement"):
            for n in range(10):
                async with unaware.begin() as conn:
                    await conn.execute(
                        text("SELECT count(*) FROM projects WHERE id > :n"), {"n": n}
                    )
    finally:
        await unaware.dispose()
    for aware in (
        await open_engine(pgbouncer.url_for(name)),
        await open_engine(pgbouncer.bare_url_for(name), pooler=True),
    ):
        try:
            records = Records(aware)
            for n in range(10):
                rid = f"pool-{uuid.uuid4().hex[:8]}-{n}"
                request = GenerationRequested.model_validate({"request_id": rid, "prompt": "p"})
                assert await records.record(request, "t.generation.requested")
                assert (await records.get(rid)) is not None
        finally:
            await aware.dispose()


@pytest.mark.parametrize(
    ("url", "pooled"),
    [
        ("postgresql://u@db.example.supabase.co:5432/postgres", False),
        ("postgresql://u@aws-0-eu-west-1.pooler.supabase.com:6543/postgres", True),
        ("postgresql://u@aws-0-eu-west-1.pooler.supabase.com:6543/postgres?pgbouncer=false", False),
        ("postgres://u@127.0.0.1:6432/db?pgbouncer=true", True),
        ("sqlite:///x.db", False),
    ],
)
def test_the_url_says_when_a_pooler_is_in_front(url: str, pooled: bool) -> None:
    assert pooler_in_url(url) is pooled


def test_the_flag_never_reaches_libpq(tmp_path: Path) -> None:
    from vidpipe.db.tables import normalise_database_url

    assert "pgbouncer" not in normalise_database_url("postgresql://u@h:6432/d?pgbouncer=true")
