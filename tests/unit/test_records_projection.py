"""The projection: statuses never go backwards, whatever order events arrive in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from itertools import permutations

from schemas.events import (
    Event,
    GenerationRequested,
    JobFailed,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    VideoStored,
)
from vidpipe.policy.projection import project

RID = "req-1"


def _events() -> list[Event]:
    return [
        GenerationRequested(event_id=uuid.uuid4(), request_id=RID, prompt="a fox"),
        JobSubmitted(
            event_id=uuid.uuid4(),
            request_id=RID,
            provider="azure-sora",
            provider_job_id="task_1",
            endpoint_host="h",
        ),
        JobProgressed(
            event_id=uuid.uuid4(),
            request_id=RID,
            provider="azure-sora",
            provider_job_id="task_1",
            status="running",
            provider_status="running",
            progress=40,
        ),
        JobSucceeded(
            event_id=uuid.uuid4(),
            request_id=RID,
            provider="azure-sora",
            provider_job_id="task_1",
            generation_ids=["gen_1"],
        ),
        VideoStored(
            event_id=uuid.uuid4(),
            request_id=RID,
            storage_url="file:///v.mp4",
            size_bytes=10,
            sha256="0" * 64,
            generation_id="gen_1",
        ),
    ]


def _apply(events: list[Event]) -> dict[str, object]:
    row: dict[str, object] = {}
    for event in events:
        row.update(project(row, event))
    return row


def test_in_order_ends_stored_with_every_column() -> None:
    row = _apply(_events())
    assert row["status"] == "stored"
    assert row["output_image_url"] == "file:///v.mp4"
    assert row["sora_job_id"] == "task_1"
    assert row["sora_generation_id"] == "gen_1"
    assert row["prompt"] == "a fox"
    assert row["azure_endpoint"] == "h"
    assert row["progress"] == 100


def test_any_order_ends_in_the_same_status() -> None:
    events = _events()
    for order in permutations(events):
        row = _apply(list(order))
        assert row["status"] == "stored", [e.event_type for e in order]
        assert row["prompt"] == "a fox"


def test_redelivered_progress_does_not_undo_success() -> None:
    events = _events()
    row = _apply([*events, events[2], events[1]])
    assert row["status"] == "stored"
    assert row["progress"] == 100


def test_failure_keeps_a_readable_message() -> None:
    failed = JobFailed(
        event_id=uuid.uuid4(),
        request_id=RID,
        stage="poll",
        reason_code="output_moderation",
        message="blocked",
        occurred_at=datetime.now(UTC),
    )
    row = _apply([_events()[0], failed])
    assert row["status"] == "failed"
    assert row["error_message"] == "output_moderation: blocked"


def _placeholder_and_real() -> tuple[VideoStored, VideoStored]:
    placeholder = VideoStored(
        event_id=uuid.uuid4(),
        request_id=RID,
        storage_url="file:///p.mp4",
        size_bytes=5,
        sha256="1" * 64,
        placeholder=True,
    )
    real = VideoStored(
        event_id=uuid.uuid4(),
        request_id=RID,
        storage_url="file:///v.mp4",
        size_bytes=10,
        sha256="0" * 64,
        placeholder=False,
    )
    return placeholder, real


def test_a_real_video_replaces_the_placeholder_never_the_reverse() -> None:
    placeholder, real = _placeholder_and_real()
    base = _events()[:4]
    row = _apply([*base, placeholder])
    assert (row["status"], row["placeholder"]) == ("placeholder", True)
    row = _apply([*base, placeholder, real, placeholder])
    assert (row["status"], row["output_image_url"], row["placeholder"]) == (
        "stored",
        "file:///v.mp4",
        False,
    )
