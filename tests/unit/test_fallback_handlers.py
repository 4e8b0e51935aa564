"""Redownloader and failover logic with in-memory collaborators."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tenacity import wait_none

from schemas.events import (
    DownloadGaveUp,
    DownloadRetryScheduled,
    DownloadUnavailable,
    GenerationRequested,
    RedownloadDue,
    RequestSnapshot,
    VideoStored,
)
from schemas.topics import Topics
from services.failover.handlers import FailoverDeps, child_request_id, handle_trigger
from services.redownloader.handlers import (
    RedownloaderDeps,
    handle_download_unavailable,
    handle_retry_due,
    next_delay,
)
from vidpipe.errors import DownloadNotAvailable
from vidpipe.media.sample import render_sample_mp4
from vidpipe.storage import LocalFolderStorage
from vidpipe.testing import FakeProvider, MemoryPublisher
from vidpipe.usecases.fetch_video import DownloadPolicy

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _unavailable(
    fallbacks: list[str] | None = None, expires_in_s: float = 3600, parent: str | None = None
) -> DownloadUnavailable:
    return DownloadUnavailable(
        event_id=uuid.uuid4(),
        request_id="r1",
        provider="azure-sora",
        provider_job_id="task_1",
        generation_id="gen_1",
        reason_code="not_found",
        message="404",
        attempted_at=NOW,
        expires_at=NOW + timedelta(seconds=expires_in_s),
        request=RequestSnapshot.model_validate(
            {"prompt": "a fox", "fallbacks": fallbacks, "parent_request_id": parent}
        ),
    )


def _redownloader(
    tmp_path: Path, provider: FakeProvider
) -> tuple[RedownloaderDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    deps = RedownloaderDeps(
        providers={provider.name: provider},
        storage=LocalFolderStorage(tmp_path),
        publisher=publisher,
        topics=Topics("t."),
        default_fallbacks=["retry"],
        initial_s=60,
        max_interval_s=3600,
        download=DownloadPolicy(attempts=1, wait=wait_none()),
        now=lambda: NOW,
    )
    return deps, publisher


def test_intervals_grow_to_hourly() -> None:
    assert [next_delay(n, 60, 3600) for n in (1, 2, 3, 6, 7, 12)] == [
        60,
        120,
        240,
        1920,
        3600,
        3600,
    ]


async def test_retries_until_the_video_appears(tmp_path: Path) -> None:
    provider = FakeProvider(
        video=render_sample_mp4(),
        download_errors=[DownloadNotAvailable("404", status_code=404)] * 2,
    )
    deps, publisher = _redownloader(tmp_path, provider)
    await handle_download_unavailable(_unavailable(), deps)
    for _ in range(5):
        if not publisher.scheduled:
            break
        _delay, topic, _key, payload = publisher.scheduled.pop(0)
        assert topic == "t.redownloader.due"
        await handle_retry_due(RedownloadDue.model_validate(payload), deps)
    stored = publisher.of_type(VideoStored)
    assert len(stored) == 1 and stored[0].placeholder is False  # type: ignore[attr-defined]
    scheduled = publisher.of_type(DownloadRetryScheduled)
    assert [e.attempt for e in scheduled] == [1, 2, 3]  # type: ignore[attr-defined]
    assert provider.downloads == 3


async def test_never_waits_past_expiry_and_then_gives_up(tmp_path: Path) -> None:
    provider = FakeProvider(download_errors=[DownloadNotAvailable("404", status_code=404)] * 9)
    deps, publisher = _redownloader(tmp_path, provider)
    event = _unavailable(expires_in_s=100)
    await handle_download_unavailable(event, deps)
    delays = [publisher.scheduled[0][0]]
    assert delays == [60]
    deps.now = lambda: NOW + timedelta(seconds=60)
    await handle_retry_due(RedownloadDue(retry_attempt=1, unavailable=event), deps)
    # 120 s would overshoot expires_at (40 s away): one last try just before it.
    assert publisher.scheduled[-1][0] == 39
    deps.now = lambda: NOW + timedelta(seconds=100)
    await handle_retry_due(RedownloadDue(retry_attempt=2, unavailable=event), deps)
    (gave_up,) = publisher.of_type(DownloadGaveUp)
    assert gave_up.reason_code == "expired"  # type: ignore[attr-defined]


async def test_policy_without_retry_is_ignored(tmp_path: Path) -> None:
    deps, publisher = _redownloader(tmp_path, FakeProvider())
    await handle_download_unavailable(_unavailable(fallbacks=["placeholder"]), deps)
    assert publisher.events == [] and publisher.scheduled == []


def _failover(when: str = "after_retry") -> tuple[FailoverDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    return FailoverDeps(
        publisher=publisher,
        default_fallbacks=["retry", "failover"],
        available_providers=["azure-sora", "openai-videos"],
        when=when,
    ), publisher


def _gave_up(parent: str | None = None, fallbacks: list[str] | None = None) -> DownloadGaveUp:
    source = _unavailable(fallbacks=fallbacks, parent=parent)
    return DownloadGaveUp(
        event_id=uuid.uuid4(),
        request_id="r1",
        provider="azure-sora",
        provider_job_id="task_1",
        generation_id="gen_1",
        reason_code="expired",
        attempts=3,
        message="gone",
        request=source.request,
    )


async def test_failover_resubmits_once_to_the_other_provider() -> None:
    deps, publisher = _failover()
    await handle_trigger(_gave_up(), deps)
    await handle_trigger(_gave_up(), deps)
    requests = publisher.of_type(GenerationRequested)
    assert len({r.event_id for r in requests}) == 1  # a redelivery repeats the same request
    child = requests[0]
    assert isinstance(child, GenerationRequested)
    assert child.request_id == child_request_id("r1") == "r1.failover"
    assert child.provider == "openai-videos"
    assert child.parent_request_id == "r1"
    assert child.fallbacks == ["retry"]


async def test_failover_never_twice_in_a_lineage_and_obeys_policy_and_timing() -> None:
    deps, publisher = _failover()
    await handle_trigger(_gave_up(parent="r0"), deps)
    await handle_trigger(_gave_up(fallbacks=["retry"]), deps)
    await handle_trigger(_unavailable(), deps)  # "immediate" events are not this mode's trigger
    assert publisher.events == []
    deps_now, publisher_now = _failover(when="immediate")
    await handle_trigger(_unavailable(fallbacks=["failover"]), deps_now)
    assert len(publisher_now.of_type(GenerationRequested)) == 1


def test_child_ids_stay_within_the_contract() -> None:
    long_id = "x" * 128
    child = child_request_id(long_id)
    assert len(child) <= 128 and child != long_id
