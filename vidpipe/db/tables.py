"""Database engine and tables (SQLite by default, PostgreSQL / Supabase by URL).

Tables:
    projects      one row per generation: what a UI or an operator reads (the seed app's columns)
    events        append-only log of every event the recorder saw, unique by event_id
    submissions   the submitter's ledger: which request became which provider job
    provider_slots  how many provider jobs are in flight, per provider (the concurrency quota)

`insert_ignore` is the one dialect-aware "insert unless the key exists" both stores use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    inspect,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = [
    "create_tables",
    "events",
    "insert_ignore",
    "metadata",
    "normalise_database_url",
    "open_engine",
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


def _add_missing_columns(sync_conn: Any) -> None:
    # Columns added in later versions are nullable, so an older database gains them in place.
    inspector = inspect(sync_conn)
    for table in metadata.sorted_tables:
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in existing and column.nullable:
                kind = column.type.compile(dialect=sync_conn.dialect)
                sync_conn.execute(
                    text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Several processes share the file: WAL lets readers run beside the one writer, and the busy
    # timeout makes a writer wait for the lock instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


async def open_engine(
    url: str, *, create: bool = True, base_dir: Path | None = None
) -> AsyncEngine:
    """An engine for `url`, with every table created when `create` is set."""
    database_url = normalise_database_url(url, base_dir=base_dir)
    # A server connection may have been dropped while it sat in the pool: ping it before use.
    # A SQLite file has no connection to lose, and the ping would cost a statement per
    # transaction.
    pre_ping = not database_url.startswith("sqlite")
    engine = create_async_engine(database_url, pool_pre_ping=pre_ping)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    if create:
        await create_tables(engine)
    return engine


async def create_tables(engine: AsyncEngine, attempts: int = 5) -> None:
    # Every process creates the tables it needs at start; when two race, the loser sees "already
    # exists" from the one that won, and its next look finds the tables there.
    for attempt in range(attempts):
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
                await conn.run_sync(_add_missing_columns)
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
