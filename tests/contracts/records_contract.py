"""Records scenarios the SQLite unit tests and the PostgreSQL integration tests both run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from schemas.events import Event, GenerationRequested, JobSubmitted
from vidpipe.db.records import Records
from vidpipe.db.tables import events


async def payloads_read_back_as_the_events(records: Records, request_id: str) -> None:
    """The log's payload column holds each event's JSON form: what `model_dump(mode="json")`
    gives, and the event again when validated (non-ASCII text, quotes, metadata, times)."""
    written: list[Event] = [
        GenerationRequested(
            event_id=uuid.uuid4(),
            request_id=request_id,
            prompt="un renard sous la neige, « été » 🦊",
            metadata={"user_id": "u-1", "note": 'l\'\u00e9t\u00e9 "cit\u00e9"\n'},
            occurred_at=datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC),
        ),
        JobSubmitted(
            event_id=uuid.uuid4(),
            request_id=request_id,
            provider="azure-sora",
            provider_job_id="task_1",
        ),
    ]
    assert await records.record_many([(event, "t") for event in written]) == [True, True]
    async with records.engine.connect() as conn:
        rows = await conn.execute(
            select(events.c.payload).where(events.c.request_id == request_id).order_by(events.c.seq)
        )
        payloads = [row[0] for row in rows]
    assert payloads == [event.model_dump(mode="json") for event in written]
    assert [type(e).model_validate(p) for e, p in zip(written, payloads, strict=True)] == written
