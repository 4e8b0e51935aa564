"""`vidpipe.db.bulk` stores what SQLAlchemy's `insert` and `update` would, on any backend.

Each scenario writes the same rows twice into one database, once through `vidpipe.db.bulk` (keys
prefixed `ours-`) and once through SQLAlchemy's `insert` / `update` (`theirs-`), then compares
the stored values as the database holds them: on SQLite each value with its storage class
(`typeof`), on PostgreSQL each value cast to text. A conversion that differs (a datetime's text
or zone, a boolean, a float's digits, a JSON document, a default SQLAlchemy fills in) shows.
Run on SQLite by tests/unit/test_db_bulk.py, on PostgreSQL by
tests/integration/test_db_bulk_postgres.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Table, insert, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from vidpipe.db.bulk import insert_new, update_rows
from vidpipe.db.tables import JSONText, events, projects

CET = timezone(timedelta(hours=1))
OURS, THEIRS = "ours-", "theirs-"


async def stored(engine: AsyncEngine, table: Table, prefix: str) -> list[tuple[Any, ...]]:
    """The rows of `table` whose request_id starts with `prefix`, the prefix taken out, every
    value as the database holds it; the surrogate keys (`id`, `seq`, `event_id`) left out."""
    quote = engine.dialect.identifier_preparer.quote
    names = [c.name for c in table.columns if c.name not in ("id", "seq", "event_id")]
    if engine.dialect.name == "sqlite":
        listed = ", ".join(f"typeof({quote(n)}), {quote(n)}" for n in names)
    else:
        listed = ", ".join(f"{quote(n)}::text" for n in names)
    sql = (
        f"SELECT {listed} FROM {quote(table.name)} "  # noqa: S608 (the test's own identifiers)
        "WHERE request_id LIKE :prefix ORDER BY request_id"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(text(sql), {"prefix": f"{prefix}%"})).all()
    return [tuple(v.replace(prefix, "") if isinstance(v, str) else v for v in row) for row in rows]


def project_row(request_id: str, **overrides: Any) -> dict[str, Any]:
    """A value in every column of `projects` but the surrogate key, of each type it has."""
    row: dict[str, Any] = {
        "request_id": request_id,
        "parent_request_id": None,
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
        "next_retry_at": datetime(1999, 1, 2, 3, 4, 5, tzinfo=UTC),
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


def _event_row(prefix: str, event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "request_id": f"{prefix}r-full",
        "event_type": "GenerationRequested",
        "topic": "vidpipe.generation.requested",
        "occurred_at": datetime(2026, 12, 8, 1, tzinfo=CET),
        "recorded_at": datetime(2026, 12, 8, tzinfo=UTC),
        "payload": JSONText('{"prompt":"\u00e9 \\"q\\"","n":1.5e-7,"ok":true,"list":[1,null]}'),
    }


async def inserts_store_what_sqlalchemy_stores(engine: AsyncEngine) -> None:
    def rows(prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
        full = project_row(f"{prefix}r-full")
        # Left out: SQLAlchemy fills `status` and `placeholder` from their column defaults.
        when = full["created_at"]
        sparse = {"request_id": f"{prefix}r-sparse", "created_at": when, "updated_at": when}
        return full, sparse

    full, sparse = rows(OURS)
    ours_event = _event_row(OURS, "0b8f0a52-6f55-4d8e-9d55-3f2b8f0a5200")
    async with engine.begin() as conn:
        assert await insert_new(conn, projects.c.request_id, [full]) == {full["request_id"]}
        went_in = await insert_new(conn, projects.c.request_id, [sparse, full])
        assert went_in == {sparse["request_id"]}
        assert await insert_new(conn, events.c.event_id, [ours_event]) == {ours_event["event_id"]}
        assert await insert_new(conn, events.c.event_id, [ours_event]) == set()
    full, sparse = rows(THEIRS)
    async with engine.begin() as conn:
        await conn.execute(insert(projects), [full])
        await conn.execute(insert(projects), [sparse])
        await conn.execute(
            insert(events), [_event_row(THEIRS, "1b8f0a52-6f55-4d8e-9d55-3f2b8f0a5200")]
        )
    assert len(await stored(engine, projects, OURS)) == 2
    assert await stored(engine, projects, OURS) == await stored(engine, projects, THEIRS)
    assert await stored(engine, events, OURS) == await stored(engine, events, THEIRS)


async def updates_store_what_sqlalchemy_stores(engine: AsyncEngine) -> None:
    columns = ("status", "placeholder", "metadata", "error_message", "cost_usd", "next_retry_at")
    changes: dict[str, dict[str, Any]] = {
        "r-1": {"status": "succeeded", "placeholder": False, "metadata": {"k": "\u00e9"}},
        "r-2": {"status": "failed", "error_message": None, "cost_usd": 2.5},
        "r-3": {"next_retry_at": datetime(2027, 1, 1, tzinfo=CET), "metadata": None},
    }
    for prefix in (OURS, THEIRS):
        before = [project_row(f"{prefix}{rid}") for rid in changes]
        after = [project_row(f"{prefix}{rid}", **moved) for rid, moved in changes.items()]
        async with engine.begin() as conn:
            await conn.execute(insert(projects), before)
            if prefix == OURS:  # all three rows in one statement
                await update_rows(conn, projects.c.request_id, columns, after)
            else:
                for row in after:
                    await conn.execute(
                        update(projects)
                        .where(projects.c.request_id == row["request_id"])
                        .values({name: row[name] for name in columns})
                    )
    ours = await stored(engine, projects, OURS)
    assert ours == await stored(engine, projects, THEIRS)
    status = [c.name for c in projects.columns if c.name != "id"].index("status")
    # The updates did write (on SQLite each value follows its storage class).
    found = [
        row[status * 2 + 1] if engine.dialect.name == "sqlite" else row[status] for row in ours
    ]
    assert found == ["succeeded", "failed", "running"]


async def a_page_break_loses_no_row(engine: AsyncEngine) -> None:
    now = datetime(2026, 12, 8, tzinfo=UTC)
    rows = [
        {
            "request_id": f"{OURS}p-{i:05d}",
            "status": "requested",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(2_345)  # more than two SQLite statements' worth
    ]
    async with engine.begin() as conn:
        went_in = await insert_new(conn, projects.c.request_id, rows)
        again = await insert_new(conn, projects.c.request_id, rows[::-1])
    assert went_in == {row["request_id"] for row in rows}
    assert again == set()
    assert len(await stored(engine, projects, f"{OURS}p-")) == len(rows)
