"""The records on a real PostgreSQL: idempotent by event_id, parents linked to failover children."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from schemas.events import (
    DownloadGaveUp,
    GenerationRequested,
    JobSubmitted,
    VideoStored,
    derive_event_id,
)
from tests.contracts.records_contract import payloads_read_back_as_the_events
from vidpipe.db.records import Records
from vidpipe.db.tables import events, insert_ignore, open_engine


@pytest.fixture
async def records(postgres_url: str) -> AsyncIterator[Records]:
    engine = await open_engine(postgres_url)
    yield Records(engine)
    await engine.dispose()


async def test_the_same_event_twice_is_recorded_once(records: Records) -> None:
    rid = f"pg-{uuid.uuid4().hex[:8]}"
    request = GenerationRequested.model_validate({"request_id": rid, "prompt": "a fox"})
    submitted = JobSubmitted(
        event_id=derive_event_id(rid, "JobSubmitted"),
        request_id=rid,
        provider="azure-sora",
        provider_job_id="task_1",
    )
    assert await records.record(request, "t.generation.requested") is True
    assert await records.record(submitted, "t.job.submitted") is True
    assert await records.record(submitted, "t.job.submitted") is False
    assert await records.event_types(rid) == ["GenerationRequested", "JobSubmitted"]
    view = await records.get(rid)
    assert view is not None and view.status == "submitted" and view.sora_job_id == "task_1"


async def test_failover_child_links_its_video_to_the_parent(records: Records) -> None:
    parent = f"pg-{uuid.uuid4().hex[:8]}"
    child = f"{parent}.failover"
    await records.record(
        GenerationRequested.model_validate({"request_id": parent, "prompt": "p"}), "t"
    )
    await records.record(
        DownloadGaveUp(
            event_id=uuid.uuid4(),
            request_id=parent,
            provider="azure-sora",
            provider_job_id="task_1",
            generation_id="gen_1",
            reason_code="expired",
            attempts=3,
            message="gone",
        ),
        "t",
    )
    assert (await records.get(parent)).status == "expired"  # type: ignore[union-attr]
    await records.record(
        GenerationRequested.model_validate(
            {
                "request_id": child,
                "prompt": "p",
                "parent_request_id": parent,
                "provider": "openai-videos",
            }
        ),
        "t",
    )
    view = await records.get(parent)
    assert view is not None
    assert (view.status, view.failover_request_id) == ("failed_over", child)
    await records.record(
        VideoStored(
            event_id=uuid.uuid4(),
            request_id=child,
            storage_url="file:///c.mp4",
            size_bytes=9,
            sha256="2" * 64,
        ),
        "t",
    )
    view = await records.get(parent)
    assert view is not None
    assert (view.status, view.output_image_url) == ("stored", "file:///c.mp4")
    child_view = await records.get(child)
    assert child_view is not None and child_view.status == "stored"


async def test_insert_ignore_tells_whether_a_row_went_in(records: Records) -> None:
    # psycopg's rowcount after ON CONFLICT DO NOTHING is not to be trusted; RETURNING is.
    row = {
        "event_id": str(uuid.uuid4()),
        "request_id": "pg-insert",
        "event_type": "Probe",
        "topic": "t",
        "occurred_at": records.clock(),
        "recorded_at": records.clock(),
        "payload": {},
    }
    async with records.engine.begin() as conn:
        assert await insert_ignore(conn, events, row, "event_id") is True
    async with records.engine.begin() as conn:
        assert await insert_ignore(conn, events, {**row, "topic": "u"}, "event_id") is False


async def test_the_log_keeps_each_events_json_form(records: Records) -> None:
    await payloads_read_back_as_the_events(records, f"pg-{uuid.uuid4().hex[:8]}")
