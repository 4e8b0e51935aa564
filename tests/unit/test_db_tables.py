"""The one dialect-aware insert-unless-present, on SQLite (PostgreSQL: tests/integration)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import GenerationRequested
from tests.contracts.records_contract import payloads_read_back_as_the_events
from vidpipe.db.ledger import Ledger
from vidpipe.db.records import Records
from vidpipe.db.tables import (
    JSONText,
    dump_json,
    events,
    insert_ignore,
    open_engine,
    provider_slots,
    submissions,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield engine
    await engine.dispose()


async def test_insert_ignore_inserts_once_and_says_so(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        first = await insert_ignore(
            conn, provider_slots, {"provider": "p", "in_use": 1}, "provider"
        )
    assert first is True
    async with engine.begin() as conn:
        again = await insert_ignore(
            conn, provider_slots, {"provider": "p", "in_use": 5}, "provider"
        )
        rows = (await conn.execute(select(provider_slots))).all()
    assert again is False
    assert [tuple(r) for r in rows] == [("p", 1)]  # the first row stays as it was


async def test_the_stores_stamp_rows_with_their_clock(engine: AsyncEngine) -> None:
    ledger = Ledger(engine, clock=lambda: NOW)
    assert await ledger.try_acquire("r1", "azure-sora", 2)
    records = Records(engine, clock=lambda: NOW)
    request = GenerationRequested.model_validate({"request_id": "r1", "prompt": "a fox"})
    assert await records.record(request, "t.generation.requested")
    async with engine.connect() as conn:
        (created,) = (await conn.execute(select(submissions.c.created_at))).one()
        (recorded,) = (await conn.execute(select(events.c.recorded_at))).one()
    view = await records.get("r1")
    assert view is not None
    # SQLite keeps no zone: compare the wall-clock time written.
    assert {created.replace(tzinfo=UTC), recorded.replace(tzinfo=UTC), view.updated_at} == {NOW}


async def test_a_sqlite_file_gives_a_process_one_connection_at_a_time(engine: AsyncEngine) -> None:
    # One writer per file: a second transaction of the process queues in asyncio until the
    # first ends, instead of taking another connection into SQLite's sleeping busy handler.
    second_in = asyncio.Event()

    async def second() -> None:
        async with engine.begin() as conn:
            await conn.execute(select(1))
            second_in.set()

    async with engine.begin() as conn:
        await conn.execute(select(1))
        waiting = asyncio.create_task(second())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(second_in.wait()), timeout=0.5)
    await asyncio.wait_for(waiting, timeout=10)
    assert second_in.is_set()


async def test_the_log_keeps_each_events_json_form(engine: AsyncEngine) -> None:
    await payloads_read_back_as_the_events(Records(engine), "r-payload")


def test_the_engines_json_serializer_writes_serialized_text_as_it_is() -> None:
    assert dump_json(JSONText('{"a":1}')) == '{"a":1}'
    assert dump_json({"a": "é"}) == '{"a": "\\u00e9"}'
