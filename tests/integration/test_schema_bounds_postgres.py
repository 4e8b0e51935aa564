"""Inputs the schema accepts are inputs the records can store, on a real PostgreSQL.

Every event here has its texts at their schema bounds, in the characters that are hardest to
store (4-byte UTF-8, controls PostgreSQL does take); all of them must be recorded. A NUL, which
PostgreSQL refuses, is refused by the schema first.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from schemas.events import (
    MESSAGE_MAX_CHARS,
    PROVIDER_ID_MAX_CHARS,
    REQUEST_ID_MAX_CHARS,
    DownloadUnavailable,
    Event,
    GenerationRequested,
    JobFailed,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    RequestSnapshot,
    UserNotified,
)
from vidpipe.db.records import Records
from vidpipe.db.tables import open_engine

WIDE = "😀"  # four bytes in UTF-8, one character for PostgreSQL's varchar(n)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def records(postgres_url: str) -> AsyncIterator[Records]:
    engine = await open_engine(postgres_url)
    yield Records(engine)
    await engine.dispose()


def maximal_events(request_id: str) -> list[Event]:
    job_id = WIDE * PROVIDER_ID_MAX_CHARS
    generation_id = "é" + WIDE * (PROVIDER_ID_MAX_CHARS - 1)
    request = GenerationRequested.model_validate(
        {
            "request_id": request_id,
            "prompt": WIDE * 3990 + "\x01\t\n\x7f",
            "model": WIDE * 128,
            "provider": "p" * 64,
            "metadata": {f"{i:02d}" + "k" * 62: "\x02" + WIDE * 511 for i in range(32)},
            "callback_url": "https://hooks.example/" + "a" * 2000,
        }
    )
    common = {"request_id": request_id, "occurred_at": NOW}
    job = {**common, "provider": WIDE * 64, "provider_job_id": job_id, "endpoint_host": "h" * 256}
    return [
        request,
        JobSubmitted(
            event_id=uuid.uuid4(),
            request=RequestSnapshot.of(request),
            model=WIDE * 128,
            **job,
        ),
        JobProgressed(
            event_id=uuid.uuid4(),
            status="running",
            provider_status="\x03" * 256,
            progress=50,
            **job,
        ),
        JobSucceeded(
            event_id=uuid.uuid4(),
            generation_ids=[generation_id] * 16,
            **job,
        ),
        DownloadUnavailable(
            event_id=uuid.uuid4(),
            generation_id=generation_id,
            variant_index=15,
            reason_code="\x04" * 256,
            message=WIDE * MESSAGE_MAX_CHARS,
            attempted_at=NOW,
            **job,
        ),
        UserNotified(
            event_id=uuid.uuid4(),
            channel="record",
            language="x" * 16,
            message="\x05" * MESSAGE_MAX_CHARS,
            delivered=True,
            **common,
        ),
        JobFailed(
            event_id=uuid.uuid4(),
            provider=WIDE * 64,
            provider_job_id=job_id,
            stage="poll",
            reason_code=WIDE * 256,
            message=WIDE * MESSAGE_MAX_CHARS,
            **common,
        ),
    ]


async def test_events_at_every_bound_are_recorded(records: Records) -> None:
    request_id = f"pg.{uuid.uuid4().hex}".ljust(REQUEST_ID_MAX_CHARS, ".")
    events = maximal_events(request_id)
    for event in events:
        assert await records.record(event, "t") is True, event.event_type
    assert await records.event_types(request_id) == [e.event_type for e in events]
    view = await records.get(request_id)
    assert view is not None and view.status == "failed"
    assert view.sora_job_id == WIDE * PROVIDER_ID_MAX_CHARS


async def test_a_nul_is_refused_by_the_schema_before_postgresql_refuses_it(
    records: Records,
) -> None:
    request_id = f"pg-nul-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValidationError, match="cannot store"):
        GenerationRequested.model_validate({"request_id": request_id, "prompt": "a\x00b"})
    # What the schema guards against: the same request, unvalidated, is refused by PostgreSQL.
    unchecked = GenerationRequested.model_construct(
        event_id=uuid.uuid4(), request_id=request_id, prompt="a\x00b", occurred_at=NOW
    )
    with pytest.raises((DBAPIError, ValueError)):
        await records.record(unchecked, "t")
