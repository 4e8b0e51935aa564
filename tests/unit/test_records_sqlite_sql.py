"""The records' SQLite statements written as driver SQL store what SQLAlchemy's would.

`vidpipe.db.records` inserts and updates on SQLite with driver SQL and converts the values
itself (SQLAlchemy's per-value bookkeeping cost more than SQLite's insert). Each test writes the
same rows both ways into two real SQLite files and compares the stored values as SQLite holds
them, read with plain `sqlite3`, so a conversion that differs (a datetime's text, a boolean, a
JSON document, a default SQLAlchemy fills in) shows.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import DateTime, insert, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from vidpipe.db.records import _insert_new, _write_back, sqlite_datetime
from vidpipe.db.tables import JSONText, events, open_engine, projects

CET = timezone(timedelta(hours=1))


def _stored(path: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        # Column order and every value as SQLite stores it (typeof shows text vs integer vs real).
        names = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        listed = ", ".join(f"{n!r}, typeof({n}), {n}" for n in names if n not in ("id", "seq"))
        return db.execute(f"SELECT {listed} FROM {table} ORDER BY rowid").fetchall()  # noqa: S608


async def _engine(path: Path) -> AsyncEngine:
    return await open_engine(f"sqlite:///{path}")


def _project_row(request_id: str, **overrides: Any) -> dict[str, Any]:
    """A value in every column of `projects` but the key, of each type the table has."""
    row: dict[str, Any] = {
        "request_id": request_id,
        "parent_request_id": "parent-1",
        "prompt": "a prompt, with \u00e9 and \u4e2d and an emoji \U0001f3ac",
        "input_image_url": "https://example.com/i.png",
        "output_image_url": None,
        "status": "running",
        "progress": 42,
        "provider": "azure-sora",
        "model": "sora-2",
        "sora_job_id": "task-1",
        "sora_generation_id": "gen-1",
        "azure_endpoint": "example.openai.azure.com",
        "attempted_download_at": datetime(2026, 12, 8, 1, 2, 3, 456789, tzinfo=UTC),
        "error_message": 'quote " and backslash \\',
        "placeholder": True,
        "video_size_bytes": 5_000_000_000,
        "video_sha256": "ab" * 32,
        "expires_at": datetime(2026, 12, 9, 0, 0, tzinfo=CET),
        "user_message": None,
        "retry_attempts": 3,
        "next_retry_at": datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
        "failover_request_id": None,
        "metadata": {"user_id": "u-1", "lang": "fr", "nested": "\u00e9"},
        "created_at": datetime(2026, 12, 8, tzinfo=UTC),
        "updated_at": datetime(2026, 12, 8, 0, 0, 0, 1, tzinfo=UTC),
        "owner_id": "u-1",
        "estimated_cost_usd": 0.1 + 0.2,
        "cost_usd": 1e-7,
        "price_version": "2026-11",
        "failover_path": "azure-sora,gemini",
    }
    return row | overrides


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 8, 0, 14, 22, 123456, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(999, 1, 1, tzinfo=CET),
        datetime(2026, 1, 1, 5, 6, 7),
    ],
)
def test_datetimes_are_the_text_sqlalchemy_stores(value: datetime) -> None:
    dialect = sqlite.dialect()
    process = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    assert sqlite_datetime(value) == process(value)


async def test_inserted_rows_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    full = _project_row("r-full")
    # Left out: SQLAlchemy fills `status` and `placeholder` from their column defaults.
    sparse = {
        "request_id": "r-sparse",
        "created_at": full["created_at"],
        "updated_at": full["created_at"],
    }
    event = {
        "event_id": "0b8f0a52-6f55-4d8e-9d55-3f2b8f0a5200",
        "request_id": "r-full",
        "event_type": "GenerationRequested",
        "topic": "vidpipe.generation.requested",
        "occurred_at": datetime(2026, 12, 8, 1, tzinfo=CET),
        "recorded_at": datetime(2026, 12, 8, tzinfo=UTC),
        "payload": JSONText('{"prompt":"\u00e9","n":1.5e-7,"ok":true}'),
    }
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    engine = await _engine(ours)
    try:
        async with engine.begin() as conn:
            assert await _insert_new(conn, projects.c.request_id, [full]) == {"r-full"}
            assert await _insert_new(conn, projects.c.request_id, [sparse, full]) == {"r-sparse"}
            assert await _insert_new(conn, events.c.event_id, [event]) == {event["event_id"]}
    finally:
        await engine.dispose()
    engine = await _engine(theirs)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(projects), [full])
            await conn.execute(insert(projects), [sparse])
            await conn.execute(insert(events), [event])
    finally:
        await engine.dispose()
    assert _stored(ours, "projects") == _stored(theirs, "projects")
    assert _stored(ours, "events") == _stored(theirs, "events")


async def test_a_page_break_loses_no_row(tmp_path: Path) -> None:
    now = datetime(2026, 12, 8, tzinfo=UTC)
    rows = [
        {"request_id": f"r-{i:05d}", "status": "requested", "created_at": now, "updated_at": now}
        for i in range(2_345)  # more than two statements' worth
    ]
    engine = await _engine(tmp_path / "r.db")
    try:
        async with engine.begin() as conn:
            went_in = await _insert_new(conn, projects.c.request_id, rows)
            again = await _insert_new(conn, projects.c.request_id, rows[::-1])
    finally:
        await engine.dispose()
    assert went_in == {row["request_id"] for row in rows}
    assert again == set()
    assert len(_stored(tmp_path / "r.db", "projects")) == len(rows)


async def test_written_back_columns_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    before = [_project_row("r-1"), _project_row("r-2"), _project_row("r-3")]
    after = {
        "r-1": _project_row("r-1", status="succeeded", placeholder=False, metadata={"k": "\u00e9"}),
        "r-2": _project_row("r-2", status="failed", error_message=None, cost_usd=2.5),
        "r-3": _project_row("r-3", next_retry_at=datetime(2027, 1, 1, tzinfo=CET)),
    }
    changed = {
        "r-1": {"status", "placeholder", "metadata", "updated_at"},
        "r-2": {"status", "error_message", "cost_usd", "updated_at"},
        "r-3": {"next_retry_at"},
    }
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    for path in (ours, theirs):
        engine = await _engine(path)
        try:
            async with engine.begin() as conn:
                await conn.execute(insert(projects), before)
                if path == ours:
                    await _write_back(conn, after, changed)
                else:
                    for rid, columns in changed.items():
                        await conn.execute(
                            update(projects)
                            .where(projects.c.request_id == rid)
                            .values({c: after[rid][c] for c in columns})
                        )
        finally:
            await engine.dispose()
    assert _stored(ours, "projects") == _stored(theirs, "projects")
    with sqlite3.connect(ours) as db:  # and the updates did write
        statuses = db.execute("SELECT status FROM projects ORDER BY request_id").fetchall()
    assert statuses == [("succeeded",), ("failed",), ("running",)]
