"""Database engine and tables (SQLite by default, PostgreSQL / Supabase by URL).

Tables:
    projects      one row per generation: what a UI or an operator reads (the seed app's columns)
    events        append-only log of every event the recorder saw, unique by event_id
    submissions   the submitter's ledger: which request became which provider job
    provider_slots  how many provider jobs are in flight, per provider (the concurrency quota)

`insert_ignore` is the one dialect-aware "insert unless the key exists" both stores use.

These tables are what the code queries; the schema itself is made by the migrations
(`vidpipe.db.migrate`, `vidpipe/db/migrations/versions/`), and tests/integration/test_migrations.py
checks that the two agree.

Behind a transaction-mode pooler (Supabase's on port 6543, PgBouncer) a server connection serves
another client after each transaction, so server-side prepared statements cannot be kept:
`open_engine` turns psycopg's off when told to (`pooler=True`, `?pgbouncer=true` in the URL) or
when the URL is Supabase's transaction pooler port.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = [
    "JSONText",
    "budget_buckets",
    "budget_reservations",
    "create_tables",
    "dump_json",
    "events",
    "insert_ignore",
    "metadata",
    "normalise_database_url",
    "open_engine",
    "pooler_in_url",
    "projects",
    "provider_slots",
    "submissions",
]

metadata = MetaData()

projects = Table(
    "projects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False, unique=True),
    Column("parent_request_id", String(128), index=True),
    Column("prompt", Text),
    Column("input_image_url", Text),
    # The seed's app stored the video URL here; a front end written for it keeps working.
    Column("output_image_url", Text),
    Column("status", String(32), nullable=False, default="requested"),
    Column("progress", Integer),
    Column("provider", String(64)),
    Column("model", String(128)),
    Column("sora_job_id", String(256)),
    Column("sora_generation_id", String(256)),
    Column("azure_endpoint", String(256)),
    Column("attempted_download_at", DateTime(timezone=True)),
    Column("error_message", Text),
    Column("placeholder", Boolean, nullable=False, default=False),
    Column("video_size_bytes", BigInteger),
    Column("video_sha256", String(64)),
    Column("expires_at", DateTime(timezone=True)),
    # The fallbacks' part of the story.
    Column("user_message", Text),
    Column("retry_attempts", Integer),
    Column("next_retry_at", DateTime(timezone=True)),
    Column("failover_request_id", String(128)),
    Column("metadata", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The front end's user (the request's metadata.user_id): row-level security lets a signed-in
    # user read only the rows whose owner_id is their auth.uid() (docs/supabase.md).
    Column("owner_id", Text, index=True),
    # What the job cost (docs/costs.md): the estimate at submission, the final cost at its end,
    # and the price table both come from.
    Column("estimated_cost_usd", Float),
    Column("cost_usd", Float),
    Column("price_version", String(32)),
    # The providers the request's lineage went through, in order: "azure-sora,gemini,fal".
    Column("failover_path", String(512)),
    # A provider's webhook names its job, not our request (the gateway's provider hooks).
    Index("ix_projects_provider_job", "provider", "sora_job_id"),
)

events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("request_id", String(128), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSON, nullable=False),
    Index("ix_events_request_id", "request_id"),
)

submissions = Table(
    "submissions",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("provider", String(64), nullable=False),
    # submitting: a slot is held, the provider call may or may not have happened;
    # in_flight: the provider has the job; done: terminal, the slot is released.
    Column("state", String(16), nullable=False),
    Column("provider_job_id", String(256)),
    Column("endpoint_host", String(256)),
    Column("model", String(128)),
    # When the first create was sent; set while the outcome is unknown, so a redelivery
    # reconciles with the provider's job list before creating anything.
    Column("intent_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

provider_slots = Table(
    "provider_slots",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("in_use", Integer, nullable=False, default=0),
)

# Budgets (vidpipe.db.budgets): per bucket (a budget, a period, a metadata value) what is spent,
# committed and reserved, in micro-dollars; per request and bucket what it reserved.
budget_buckets = Table(
    "budget_buckets",
    metadata,
    Column("bucket", String(255), primary_key=True),
    Column("spent_micros", BigInteger, nullable=False, default=0),
    Column("limit_micros", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

budget_reservations = Table(
    "budget_reservations",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("bucket", String(255), primary_key=True),
    Column("amount_micros", BigInteger, nullable=False),
    # reserved: the estimate, the job in flight; settled: the final cost, the job ended.
    Column("state", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


async def insert_ignore(
    conn: AsyncConnection, table: Table, values: dict[str, Any], key: str
) -> bool:
    """Insert `values` into `table` unless a row with the same `key` exists; True if inserted.

    ON CONFLICT DO NOTHING is spelled per dialect (SQLite and PostgreSQL share the syntax, not the
    SQLAlchemy construct). RETURNING tells for sure whether a row went in: drivers disagree on
    rowcount after ON CONFLICT DO NOTHING (psycopg may report -1)."""
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[key])
        .returning(table.c[key])
    )
    return (await conn.execute(statement)).first() is not None


def normalise_database_url(url: str, *, base_dir: Path | None = None) -> str:
    """Map the URLs people paste (postgres://, sqlite:///rel/path) onto async drivers."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        # `pgbouncer` is vidpipe's (and Prisma's) flag, not a libpq parameter: keep it off the
        # connection string (`open_engine` reads it first).
        parsed = parsed.difference_update_query(["pgbouncer"])
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and base_dir is not None:
            path = Path(database)
            if not path.is_absolute():
                path = base_dir / path
            database = str(path)
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        return parsed.set(drivername="sqlite+aiosqlite", database=database).render_as_string(
            hide_password=False
        )
    raise ValueError(f"unsupported database backend: {backend}")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Several processes share the file: WAL lets readers run beside the one writer, and the busy
    # timeout makes a writer wait for the lock instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


#: The port of Supabase's transaction-mode pooler (Supavisor); 5432 on the same host is session
#: mode, where prepared statements work.
SUPABASE_TRANSACTION_POOLER_PORT = 6543


def pooler_in_url(url: str | URL) -> bool:
    """Whether `url` says a transaction-mode pooler is in front: `?pgbouncer=true`, or port 6543."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() not in ("postgres", "postgresql"):
        return False
    flag = parsed.query.get("pgbouncer")
    if isinstance(flag, tuple):
        flag = flag[-1]
    if flag is not None:
        return flag.lower() in ("1", "true", "yes", "on")
    return parsed.port == SUPABASE_TRANSACTION_POOLER_PORT


@dataclass(frozen=True, slots=True)
class JSONText:
    """A value serialized already (pydantic's `model_dump_json`), for a JSON column: written
    as it is, where a dict would be built from the model and dumped again."""

    text: str


def dump_json(value: Any) -> str:
    """The engines' JSON serializer: `JSONText` as it is, anything else `json.dumps`."""
    if isinstance(value, JSONText):
        return value.text
    return json.dumps(value)


async def open_engine(
    url: str, *, create: bool = True, base_dir: Path | None = None, pooler: bool | None = None
) -> AsyncEngine:
    """An engine for `url`, migrated to the newest schema when `create` is set.

    `pooler`: a transaction-mode pooler is in front (None: as `pooler_in_url` says)."""
    behind_pooler = pooler_in_url(url) if pooler is None else pooler
    database_url = normalise_database_url(url, base_dir=base_dir)
    # A server connection may have been dropped while it sat in the pool: ping it before use.
    # A SQLite file has no connection to lose, and the ping would cost a statement per
    # transaction.
    pre_ping = not database_url.startswith("sqlite")
    connect_args: dict[str, Any] = {}
    if behind_pooler and not database_url.startswith("sqlite"):
        # psycopg prepares a statement on the server after 5 runs; the pooler may hand the next
        # transaction another server connection, which never saw it ("... does not exist").
        connect_args["prepare_threshold"] = None
    pool_args: dict[str, Any] = {}
    if database_url.startswith("sqlite") and ":memory:" not in database_url:
        # SQLite has one writer per file. Connections of one process contending for it wait in
        # SQLite's busy handler, which sleeps in growing steps; one connection per process queues
        # them in asyncio instead, woken the moment the last one commits.
        pool_args = {"pool_size": 1, "max_overflow": 0}
    engine = create_async_engine(
        database_url,
        pool_pre_ping=pre_ping,
        connect_args=connect_args,
        json_serializer=dump_json,
        **pool_args,
    )
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    if create:
        await create_tables(engine)
    return engine


async def create_tables(engine: AsyncEngine, attempts: int = 5) -> None:
    """Migrate the database to the newest schema (`vidpipe.db.migrate.upgrade`)."""
    # Imported here: the migrations pull in Alembic, which a read-only caller never needs.
    from vidpipe.db.migrate import upgrade

    # Every process migrates at start. PostgreSQL serialises them with an advisory lock; two
    # SQLite processes may still race on the first write, and the loser's next look finds the
    # schema there.
    for attempt in range(attempts):
        try:
            await upgrade(engine)
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
