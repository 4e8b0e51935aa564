"""Request mapping in the submitter and failover chains in the failover stage, in memory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.events import (
    DownloadUnavailable,
    GenerationRequested,
    JobFailed,
    JobSubmitted,
    RequestSnapshot,
)
from schemas.topics import Topics
from services.failover.handlers import FailoverDeps, handle_job_failed, handle_trigger
from services.submitter.handlers import SubmitterDeps, handle_generation_requested
from vidpipe.db.ledger import Ledger
from vidpipe.db.tables import open_engine
from vidpipe.policy.projection import project, project_parent
from vidpipe.providers.base import InputImage
from vidpipe.testing import FakeProvider, MemoryPublisher
from vidpipe.usecases.fetch_video import expected_seconds

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def _no_image(url: str) -> InputImage:
    raise AssertionError("no image expected")


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    engine = await open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield Ledger(engine)
    await engine.dispose()


def _submitter(ledger: Ledger, provider: FakeProvider) -> tuple[SubmitterDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    deps = SubmitterDeps(
        providers={provider.name: provider},
        ledger=ledger,
        publisher=publisher,
        topics=Topics("t."),
        default_provider=provider.name,
        quota=lambda _name: 2,
        fetch_image=_no_image,
        clock=lambda: NOW,
    )
    return deps, publisher


async def test_five_seconds_on_openai_videos_is_sent_as_four_and_recorded(ledger: Ledger) -> None:
    provider = FakeProvider(name="openai-videos")
    deps, publisher = _submitter(ledger, provider)
    req = GenerationRequested.model_validate(
        {"request_id": "r5", "prompt": "a fox", "seconds": 5, "size": "1920x1080"}
    )
    await handle_generation_requested(req, deps)
    (spec, _key) = provider.created[0]
    assert (spec.seconds, spec.width, spec.height) == (4, 1280, 720)
    (submitted,) = publisher.of_type(JobSubmitted)
    assert isinstance(submitted, JobSubmitted) and submitted.request is not None
    sent = submitted.request.sent
    assert sent is not None and (sent.seconds, sent.size) == (4, "1280x720")
    assert sent.changes == ["seconds 5 -> 4", "size 1920x1080 -> 1280x720"]
    assert submitted.request.seconds == 5  # the request itself is kept as asked
    # The fetched video is checked against what was sent, not what was asked.
    assert expected_seconds(submitted.request) == 4.0


async def test_an_unsupported_request_fails_before_anything_is_paid_for(ledger: Ledger) -> None:
    provider = FakeProvider(name="openai-videos")
    deps, publisher = _submitter(ledger, provider)
    req = GenerationRequested.model_validate(
        {"request_id": "r2", "prompt": "a fox", "variants": 2, "seconds": 4}
    )
    await handle_generation_requested(req, deps)
    assert provider.created == []
    (failed,) = publisher.of_type(JobFailed)
    assert isinstance(failed, JobFailed)
    assert (failed.stage, failed.reason_code) == ("submit", "unsupported_request")
    assert "at most 1 variant" in failed.message
    assert failed.request is not None and failed.request.variants == 2
    assert await ledger.in_use("openai-videos") == 0


def _failover(chain: list[str], available: list[str]) -> tuple[FailoverDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    deps = FailoverDeps(
        publisher=publisher,
        default_fallbacks=["failover"],
        available_providers=available,
        when="immediate",
        chain=chain,
        clock=lambda: NOW,
    )
    return deps, publisher


def _unavailable(request_id: str, provider: str, snapshot: RequestSnapshot) -> DownloadUnavailable:
    return DownloadUnavailable(
        event_id=uuid.uuid4(),
        request_id=request_id,
        provider=provider,
        provider_job_id="job_1",
        generation_id="gen_1",
        reason_code="download_unavailable",
        message="404",
        attempted_at=NOW,
        request=snapshot,
    )


def _snapshot_of(req: GenerationRequested) -> RequestSnapshot:
    return RequestSnapshot.of(req)


async def test_a_chain_is_walked_once_per_provider_and_ends() -> None:
    deps, publisher = _failover(["gemini", "fal"], ["azure-sora", "gemini", "fal"])
    root = RequestSnapshot(prompt="a stag", seconds=4, provider="azure-sora")
    await handle_trigger(_unavailable("r", "azure-sora", root), deps)
    await handle_trigger(_unavailable("r", "azure-sora", root), deps)  # redelivered
    first = publisher.of_type(GenerationRequested)
    assert len({e.event_id for e in first}) == 1
    child = first[0]
    assert isinstance(child, GenerationRequested)
    assert (child.request_id, child.provider, child.parent_request_id) == (
        "r.failover",
        "gemini",
        "r",
    )
    assert child.failover_path == ["azure-sora"] and child.fallbacks == ["failover"]
    await handle_trigger(_unavailable(child.request_id, "gemini", _snapshot_of(child)), deps)
    second = publisher.of_type(GenerationRequested)[-1]
    assert isinstance(second, GenerationRequested)
    assert (second.request_id, second.provider, second.parent_request_id) == (
        "r.failover2",
        "fal",
        "r",
    )
    assert second.failover_path == ["azure-sora", "gemini"]
    assert second.fallbacks == []  # the chain's last: it ends like a request without failover
    assert second.seconds == 4  # the request as asked; the submitter maps it for fal
    await handle_trigger(_unavailable(second.request_id, "fal", _snapshot_of(second)), deps)
    assert {e.request_id for e in publisher.of_type(GenerationRequested)} == {
        "r.failover",
        "r.failover2",
    }
    assert len(publisher.events) == 3  # the redelivery's copy, and nothing after the chain's end


async def test_providers_not_configured_or_unable_to_serve_are_skipped() -> None:
    # gemini is not configured; openai-videos cannot make two variants; fal can.
    deps, publisher = _failover(["gemini", "openai-videos", "fal"], ["azure-sora", "fal"])
    deps.available_providers = ["azure-sora", "openai-videos", "fal"]
    root = RequestSnapshot(prompt="a stag", seconds=4, variants=2, provider="azure-sora")
    await handle_trigger(_unavailable("r", "azure-sora", root), deps)
    assert publisher.of_type(GenerationRequested) == []  # fal makes one variant too
    single = root.model_copy(update={"variants": 1, "failover_chain": ["openai-videos", "fal"]})
    await handle_trigger(_unavailable("r", "azure-sora", single), deps)
    (child,) = publisher.of_type(GenerationRequested)
    assert isinstance(child, GenerationRequested) and child.provider == "openai-videos"
    assert child.failover_chain == ["openai-videos", "fal"]


async def test_a_providers_own_terminal_failure_fails_over_and_a_requests_does_not() -> None:
    deps, publisher = _failover(["fal"], ["azure-sora", "fal"])
    snapshot = RequestSnapshot(prompt="a heron", provider="azure-sora")

    def failed(code: str) -> JobFailed:
        return JobFailed(
            event_id=uuid.uuid4(),
            request_id=f"r-{code}",
            provider="azure-sora",
            stage="poll",
            reason_code=code,
            message="x",
            request=snapshot,
        )

    await handle_job_failed(failed("content_policy_violation"), deps)
    await handle_job_failed(failed("unsupported_request"), deps)
    assert publisher.events == []
    await handle_job_failed(failed("insufficient_quota"), deps)
    (child,) = publisher.of_type(GenerationRequested)
    assert isinstance(child, GenerationRequested)
    assert (child.request_id, child.provider) == ("r-insufficient_quota.failover", "fal")
    excluded = snapshot.model_copy(update={"fallbacks": ["retry"]})
    await handle_job_failed(
        failed("provider_unavailable").model_copy(update={"request": excluded}), deps
    )
    assert len(publisher.of_type(GenerationRequested)) == 1


def _child(rid: str, provider: str, path: list[str]) -> GenerationRequested:
    return GenerationRequested.model_validate(
        {
            "request_id": rid,
            "prompt": "a stag",
            "provider": provider,
            "parent_request_id": "r",
            "failover_path": path,
        }
    )


def test_the_record_shows_the_chain_taken_and_never_shortens_it() -> None:
    first = _child("r.failover", "gemini", ["azure-sora"])
    second = _child("r.failover2", "fal", ["azure-sora", "gemini"])
    assert project({}, first)["failover_path"] == "azure-sora,gemini"
    parent: dict[str, object] = {"request_id": "r", "status": "download_unavailable"}
    changes = project_parent(parent, {"request_id": "r.failover2"}, second)
    assert changes["failover_path"] == "azure-sora,gemini,fal"
    assert changes["failover_request_id"] == "r.failover2"
    parent.update(changes)
    # A replayed earlier child links (as before) but leaves the longer path.
    late = project_parent(parent, {"request_id": "r.failover"}, first)
    assert "failover_path" not in late
    assert (
        project({}, GenerationRequested.model_validate({"request_id": "x", "prompt": "p"})).get(
            "failover_path"
        )
        is None
    )
