"""Submitter logic with in-memory collaborators: one job per request, quota waits durably."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.events import MESSAGE_MAX_CHARS, GenerationRequested, JobFailed, JobSubmitted
from schemas.topics import Topics
from services.submitter.handlers import (
    SubmitterDeps,
    handle_generation_requested,
    handle_job_finished,
)
from vidpipe.db.ledger import Ledger
from vidpipe.db.tables import open_engine
from vidpipe.errors import AuthenticationFailed, RateLimited
from vidpipe.providers.base import InputImage
from vidpipe.testing import FakeProvider, MemoryPublisher

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def _no_image(url: str) -> InputImage:
    raise AssertionError("no image expected")


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    engine = await open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield Ledger(engine)
    await engine.dispose()


def _deps(
    ledger: Ledger, provider: FakeProvider, quota: int = 2
) -> tuple[SubmitterDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    return (
        SubmitterDeps(
            providers={provider.name: provider},
            ledger=ledger,
            publisher=publisher,
            topics=Topics("t."),
            default_provider="azure-sora",
            quota=lambda _name: quota,
            fetch_image=_no_image,
            clock=lambda: NOW,
        ),
        publisher,
    )


def _req(rid: str) -> GenerationRequested:
    return GenerationRequested.model_validate({"request_id": rid, "prompt": "a fox"})


async def test_resent_request_starts_one_job_and_repeats_the_same_event(ledger: Ledger) -> None:
    provider = FakeProvider()
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("r1"), deps)
    await handle_generation_requested(_req("r1"), deps)
    assert len(provider.created) == 1
    assert provider.created[0][1] == "r1"  # the request id is the Idempotency-Key
    submitted = publisher.of_type(JobSubmitted)
    assert len(submitted) == 2
    assert submitted[0].event_id == submitted[1].event_id


async def test_over_quota_waits_on_a_timer_and_goes_when_a_slot_frees(ledger: Ledger) -> None:
    provider = FakeProvider()
    deps, publisher = _deps(ledger, provider, quota=2)
    for rid in ("a", "b", "c"):
        await handle_generation_requested(_req(rid), deps)
    assert len(provider.created) == 2
    assert len(publisher.scheduled) == 1
    _delay, topic, key, payload = publisher.scheduled[0]
    assert (topic, key) == ("t.submitter.due", "c")
    await handle_job_finished("a", deps)
    await handle_job_finished("a", deps)  # a redelivered finish frees one slot, not two
    assert await ledger.in_use("azure-sora") == 1
    await handle_generation_requested(GenerationRequested.model_validate(payload), deps)
    assert len(provider.created) == 3
    assert await ledger.in_use("azure-sora") == 2


async def test_rate_limit_waits_as_long_as_retry_after(ledger: Ledger) -> None:
    provider = FakeProvider(create_error=RateLimited("slow down", status_code=429, retry_after=7))
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("r"), deps)
    assert publisher.scheduled[0][0] == 7
    assert await ledger.in_use("azure-sora") == 0
    assert publisher.events == []


async def test_terminal_error_fails_the_request_and_frees_the_slot(ledger: Ledger) -> None:
    provider = FakeProvider(create_error=AuthenticationFailed("401", status_code=401))
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("r"), deps)
    (failed,) = publisher.of_type(JobFailed)
    assert isinstance(failed, JobFailed)
    assert failed.reason_code == "authentication_failed"
    assert await ledger.in_use("azure-sora") == 0


async def test_unknown_provider_fails_clearly(ledger: Ledger) -> None:
    deps, publisher = _deps(ledger, FakeProvider())
    req = GenerationRequested.model_validate({"request_id": "r", "prompt": "x", "provider": "nope"})
    await handle_generation_requested(req, deps)
    (failed,) = publisher.of_type(JobFailed)
    assert isinstance(failed, JobFailed)
    assert failed.reason_code == "unknown_provider"


async def test_events_are_stamped_by_the_stages_clock(ledger: Ledger) -> None:
    deps, publisher = _deps(ledger, FakeProvider())
    await handle_generation_requested(_req("ok"), deps)
    await handle_generation_requested(_req("ok"), deps)  # the re-announcement too
    deps.providers = {"azure-sora": FakeProvider(create_error=AuthenticationFailed("401"))}
    await handle_generation_requested(_req("no"), deps)
    assert [e.event_type for e in publisher.events] == ["JobSubmitted", "JobSubmitted", "JobFailed"]
    assert {e.occurred_at for e in publisher.events} == {NOW}


async def test_a_long_failure_message_is_clipped_to_the_contracts_limit(ledger: Ledger) -> None:
    provider = FakeProvider(create_error=AuthenticationFailed("denied " * 500))
    deps, publisher = _deps(ledger, provider)
    await handle_generation_requested(_req("r"), deps)
    (failed,) = publisher.of_type(JobFailed)
    assert isinstance(failed, JobFailed)
    assert failed.message == ("denied " * 500)[:MESSAGE_MAX_CHARS]
