"""Poller logic: every check reschedules itself on a timer until the job ends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from schemas.events import JobFailed, JobProgressed, JobSubmitted, JobSucceeded, PollDue
from schemas.topics import Topics
from services.poller.handlers import PollerDeps, handle_job_submitted, handle_poll_due
from vidpipe.errors import ProviderUnavailable
from vidpipe.providers.base import ProviderJob
from vidpipe.testing import FakeProvider, MemoryPublisher

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _deps(provider: FakeProvider) -> tuple[PollerDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    return PollerDeps(
        providers={provider.name: provider},
        publisher=publisher,
        topics=Topics("t."),
        first_s=0.5,
        interval_s=2,
        clock=lambda: NOW,
    ), publisher


async def _drive(provider: FakeProvider) -> MemoryPublisher:
    deps, publisher = _deps(provider)
    await handle_job_submitted(
        JobSubmitted(
            event_id=uuid.uuid4(), request_id="r", provider="azure-sora", provider_job_id="task_1"
        ),
        deps,
    )
    fired = 0
    while fired < len(publisher.scheduled):
        _delay, topic, _key, payload = publisher.scheduled[fired]
        fired += 1
        assert topic == "t.poller.due"
        await handle_poll_due(PollDue.model_validate(payload), deps)
    return publisher


async def test_progress_then_success() -> None:
    provider = FakeProvider(
        statuses=[
            ProviderJob("task_1", "queued", "queued"),
            ProviderJob("task_1", "running", "running", progress=10),
            ProviderJob("task_1", "running", "running", progress=10),
            ProviderJob("task_1", "running", "processing", progress=80),
            ProviderJob("task_1", "succeeded", "succeeded", generation_ids=["gen_1"]),
        ]
    )
    publisher = await _drive(provider)
    progressed = publisher.of_type(JobProgressed)
    # queued is where JobSubmitted left it; the repeated 10 % is not news.
    assert [(e.provider_status, e.progress) for e in progressed] == [  # type: ignore[attr-defined]
        ("running", 10),
        ("processing", 80),
    ]
    (done,) = publisher.of_type(JobSucceeded)
    assert done.generation_ids == ["gen_1"]  # type: ignore[attr-defined]
    # The first check comes soon after submission, the next ones the interval apart.
    assert [s[0] for s in publisher.scheduled][:2] == [0.5, 2]


async def test_transient_errors_are_retried_then_failure_is_reported() -> None:
    provider = FakeProvider(
        statuses=[
            ProviderUnavailable("503", status_code=503),
            ProviderUnavailable("503", status_code=503, retry_after=9),
            ProviderJob(
                "task_1",
                "failed",
                "failed",
                failure_code="output_moderation",
                failure_message="blocked",
            ),
        ]
    )
    publisher = await _drive(provider)
    assert [s[0] for s in publisher.scheduled] == [0.5, 2, 9]
    (failed,) = publisher.of_type(JobFailed)
    assert failed.reason_code == "output_moderation"  # type: ignore[attr-defined]


async def test_every_event_and_check_is_stamped_by_the_stages_clock() -> None:
    provider = FakeProvider(
        statuses=[
            ProviderJob("task_1", "running", "running", progress=50),
            ProviderJob("task_1", "succeeded", "succeeded", generation_ids=["gen_1"]),
        ]
    )
    publisher = await _drive(provider)
    assert [e.event_type for e in publisher.events] == ["JobProgressed", "JobSucceeded"]
    assert {e.occurred_at for e in publisher.events} == {NOW}
    checks = [PollDue.model_validate(payload) for *_, payload in publisher.scheduled]
    assert [c.attempt for c in checks] == [0, 1]
    assert {c.occurred_at for c in checks} == {NOW}


async def test_a_provider_this_poller_lacks_fails_the_job_without_a_next_check() -> None:
    deps, publisher = _deps(FakeProvider())
    due = PollDue(
        event_id=uuid.uuid4(), request_id="r", provider="elsewhere", provider_job_id="task_1"
    )
    await handle_poll_due(due, deps)
    (failed,) = publisher.of_type(JobFailed)
    assert failed.reason_code == "unknown_provider"  # type: ignore[attr-defined]
    assert publisher.scheduled == []
