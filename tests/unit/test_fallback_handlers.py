"""Redownloader and failover logic with in-memory collaborators."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tenacity import wait_none

from schemas.events import (
    MESSAGE_MAX_CHARS,
    DownloadGaveUp,
    DownloadRetryScheduled,
    DownloadUnavailable,
    GenerationRequested,
    JobSucceeded,
    RedownloadDue,
    RequestSnapshot,
    VideoStored,
)
from schemas.topics import Topics
from services.failover.handlers import FailoverDeps, child_request_id, handle_trigger
from services.fetcher.handlers import FetcherDeps, handle_job_succeeded
from services.redownloader.handlers import (
    RedownloaderDeps,
    handle_download_unavailable,
    handle_retry_due,
)
from vidpipe.errors import DownloadNotAvailable, ProviderUnavailable
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
        clock=lambda: NOW,
    )
    return deps, publisher


async def test_retries_until_the_video_appears(tmp_path: Path) -> None:
    provider = FakeProvider(
        # As long as the snapshot asks (its default 5 s): the duration is checked on store.
        video=render_sample_mp4(seconds=5, fps=8),
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
    deps.clock = lambda: NOW + timedelta(seconds=60)
    await handle_retry_due(RedownloadDue(retry_attempt=1, unavailable=event), deps)
    # 120 s would overshoot the fetch deadline (expires_at, 40 s away, less a tenth of the
    # 100 s window: 30 s away): one last try just before it.
    assert publisher.scheduled[-1][0] == 29
    deps.clock = lambda: NOW + timedelta(seconds=100)
    await handle_retry_due(RedownloadDue(retry_attempt=2, unavailable=event), deps)
    (gave_up,) = publisher.of_type(DownloadGaveUp)
    assert gave_up.reason_code == "expired"  # type: ignore[attr-defined]


async def test_retry_events_carry_the_stages_clock(tmp_path: Path) -> None:
    provider = FakeProvider(download_errors=[ProviderUnavailable("503", status_code=503)])
    deps, publisher = _redownloader(tmp_path, provider)
    event = _unavailable(expires_in_s=86_400)
    await handle_download_unavailable(event, deps)
    deps.clock = lambda: NOW + timedelta(seconds=60)
    await handle_retry_due(RedownloadDue(retry_attempt=1, unavailable=event), deps)
    first, second = publisher.of_type(DownloadRetryScheduled)
    assert isinstance(first, DownloadRetryScheduled)
    assert isinstance(second, DownloadRetryScheduled)
    # The first retry follows the fetcher's attempt; the second follows the redownloader's.
    assert (first.occurred_at, first.attempted_at, first.next_attempt_at) == (
        NOW,
        event.attempted_at,
        NOW + timedelta(seconds=60),
    )
    later = NOW + timedelta(seconds=60)
    assert (second.occurred_at, second.attempted_at, second.next_attempt_at) == (
        later,
        later,
        later + timedelta(seconds=120),
    )
    assert second.last_reason_code == "transient_error"  # any retryable error is "transient"
    assert [s[0] for s in publisher.scheduled] == [60, 120]


async def test_a_retry_without_the_providers_client_gives_up(tmp_path: Path) -> None:
    deps, publisher = _redownloader(tmp_path, FakeProvider())
    deps.providers = {}
    await handle_retry_due(RedownloadDue(retry_attempt=3, unavailable=_unavailable()), deps)
    (gave_up,) = publisher.of_type(DownloadGaveUp)
    assert isinstance(gave_up, DownloadGaveUp)
    assert (gave_up.reason_code, gave_up.attempts, gave_up.occurred_at) == ("max_attempts", 2, NOW)
    assert gave_up.message == "provider 'azure-sora' is not configured here"


async def test_fetcher_and_redownloader_share_one_store_path(tmp_path: Path) -> None:
    provider = FakeProvider(video=render_sample_mp4())
    fetcher_publisher = MemoryPublisher()
    fetcher = FetcherDeps(
        providers={provider.name: provider},
        storage=LocalFolderStorage(tmp_path),
        publisher=fetcher_publisher,
        download=DownloadPolicy(attempts=1, wait=wait_none()),
        clock=lambda: NOW,
    )
    succeeded = JobSucceeded(
        event_id=uuid.uuid4(),
        request_id="r1",
        provider="azure-sora",
        provider_job_id="task_1",
        generation_ids=["gen_1"],
    )
    await handle_job_succeeded(succeeded, fetcher)
    (by_fetcher,) = fetcher_publisher.of_type(VideoStored)
    # The redownloader, late, finds the video the fetcher stored: announced, not fetched again.
    deps, publisher = _redownloader(tmp_path, provider)
    await handle_retry_due(RedownloadDue(retry_attempt=1, unavailable=_unavailable()), deps)
    (by_redownloader,) = publisher.of_type(VideoStored)
    assert provider.downloads == 1
    assert isinstance(by_fetcher, VideoStored) and isinstance(by_redownloader, VideoStored)
    assert by_fetcher.event_id == by_redownloader.event_id  # one event, whoever announces it
    assert by_fetcher.occurred_at == NOW
    assert (by_fetcher.storage_url, by_fetcher.sha256) == (
        by_redownloader.storage_url,
        by_redownloader.sha256,
    )


async def test_the_fetcher_reports_what_it_cannot_download(tmp_path: Path) -> None:
    provider = FakeProvider(
        video=render_sample_mp4(),
        download_errors=[DownloadNotAvailable("x" * 3000, status_code=404)],
    )
    publisher = MemoryPublisher()
    fetcher = FetcherDeps(
        providers={provider.name: provider},
        storage=LocalFolderStorage(tmp_path),
        publisher=publisher,
        download=DownloadPolicy(attempts=1, wait=wait_none()),
        clock=lambda: NOW,
    )

    def succeeded(request_id: str) -> JobSucceeded:
        return JobSucceeded(
            event_id=uuid.uuid4(),
            request_id=request_id,
            provider="azure-sora",
            provider_job_id="task_1",
            generation_ids=["gen_1", "gen_2"],
        )

    await handle_job_succeeded(succeeded("r1"), fetcher)
    fetcher.providers = {}
    await handle_job_succeeded(succeeded("r2"), fetcher)
    stored = publisher.of_type(VideoStored)
    assert [(e.request_id, e.variant_index) for e in stored] == [("r1", 1)]  # type: ignore[attr-defined]
    missing = [
        e for e in publisher.of_type(DownloadUnavailable) if isinstance(e, DownloadUnavailable)
    ]
    assert [(e.request_id, e.generation_id, e.reason_code) for e in missing] == [
        ("r1", "gen_1", "download_unavailable"),
        ("r2", "gen_1", "unknown_provider"),
        ("r2", "gen_2", "unknown_provider"),
    ]
    not_found = missing[0]
    assert (not_found.http_status, len(not_found.message)) == (404, MESSAGE_MAX_CHARS)
    assert (not_found.attempted_at, not_found.occurred_at) == (NOW, NOW)


async def test_policy_without_retry_is_ignored(tmp_path: Path) -> None:
    deps, publisher = _redownloader(tmp_path, FakeProvider())
    await handle_download_unavailable(_unavailable(fallbacks=["failover"]), deps)
    # Failover pursues the video: the redownloader neither retries nor gives up for it.
    assert publisher.events == [] and publisher.scheduled == []


async def test_a_policy_that_pursues_nothing_is_given_up_at_once(tmp_path: Path) -> None:
    provider = FakeProvider()
    deps, publisher = _redownloader(tmp_path, provider)
    await handle_download_unavailable(_unavailable(fallbacks=["placeholder", "notify"]), deps)
    (gave_up,) = publisher.of_type(DownloadGaveUp)
    assert isinstance(gave_up, DownloadGaveUp)
    assert (gave_up.reason_code, gave_up.attempts) == ("not_pursued", 0)
    assert "neither retry nor failover" in gave_up.message
    assert publisher.scheduled == [] and provider.downloads == 0


def _failover(when: str = "after_retry") -> tuple[FailoverDeps, MemoryPublisher]:
    publisher = MemoryPublisher()
    return FailoverDeps(
        publisher=publisher,
        default_fallbacks=["retry", "failover"],
        available_providers=["azure-sora", "openai-videos"],
        when=when,
        clock=lambda: NOW,
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
    assert child.occurred_at == NOW  # the stage's clock


async def test_failover_never_twice_in_a_lineage_and_obeys_policy_and_timing() -> None:
    deps, publisher = _failover()
    await handle_trigger(_gave_up(parent="r0"), deps)
    await handle_trigger(_gave_up(fallbacks=["retry"]), deps)
    await handle_trigger(_unavailable(), deps)  # "immediate" events are not this mode's trigger
    assert publisher.events == []
    deps_now, publisher_now = _failover(when="immediate")
    await handle_trigger(_unavailable(fallbacks=["failover"]), deps_now)
    await handle_trigger(_gave_up(fallbacks=["retry", "failover"]), deps_now)
    assert len(publisher_now.of_type(GenerationRequested)) == 1


async def test_after_retry_without_retry_fails_over_at_once() -> None:
    # The redownloader never gives up on a policy without retry: waiting for it would be forever.
    deps, publisher = _failover(when="after_retry")
    await handle_trigger(_unavailable(fallbacks=["placeholder", "failover"]), deps)
    (child,) = publisher.of_type(GenerationRequested)
    assert isinstance(child, GenerationRequested)
    assert (child.request_id, child.fallbacks) == ("r1.failover", ["placeholder"])
    await handle_trigger(_gave_up(fallbacks=["placeholder", "failover"]), deps)
    assert len(publisher.of_type(GenerationRequested)) == 1  # not a second trigger


def test_child_ids_stay_within_the_contract() -> None:
    long_id = "x" * 128
    child = child_request_id(long_id)
    assert len(child) <= 128 and child != long_id
