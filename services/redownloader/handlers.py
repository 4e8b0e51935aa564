"""Redownloader: retries a download that was unavailable, on durable timers, until it expires.

Reads:   {prefix}download.unavailable   DownloadUnavailable -> schedules the first retry
         {prefix}redownloader.due       RedownloadDue (released by this stage's timers)
Writes:  {prefix}video.stored           VideoStored (placeholder=false) when a retry succeeds
         {prefix}download.retry         DownloadRetryScheduled, before each wait
         {prefix}download.gaveup        DownloadGaveUp (expired, or out of attempts)
         {prefix}timers.redownloader    Timer carrying the next attempt

The seed's "background job that retries every hour", without cron: intervals grow from
`initial_s` (doubling) up to `max_interval_s`; no attempt is scheduled past the provider's
`expires_at`, since the asset is gone by then. A success goes through the fetcher's own
streamed, validated store path (`vidpipe.usecases.fetch_video.store_video`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from schemas.events import (
    DownloadGaveUp,
    DownloadRetryScheduled,
    DownloadUnavailable,
    FallbackName,
    RedownloadDue,
    derive_event_id,
    utcnow,
)
from schemas.topics import Topics
from vidpipe.bus import Publisher
from vidpipe.errors import ProviderError
from vidpipe.policy.fallbacks import applies
from vidpipe.providers.base import ProviderClient
from vidpipe.storage import VideoStorage
from vidpipe.usecases.fetch_video import DownloadPolicy, real_video_stored, store_video, video_key

__all__ = ["RedownloaderDeps", "handle_download_unavailable", "handle_retry_due"]

log = structlog.get_logger("vidpipe.redownloader")


@dataclass
class RedownloaderDeps:
    providers: Mapping[str, ProviderClient]
    storage: VideoStorage
    publisher: Publisher
    topics: Topics
    default_fallbacks: list[FallbackName]
    initial_s: float = 60.0
    max_interval_s: float = 3600.0
    max_attempts: int = 48
    download: DownloadPolicy = field(default_factory=DownloadPolicy)
    now: Callable[[], datetime] = utcnow


def next_delay(attempt: int, initial_s: float, max_interval_s: float) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, …): doubling, capped."""
    return float(min(max_interval_s, initial_s * 2 ** max(0, attempt - 1)))


async def handle_download_unavailable(event: DownloadUnavailable, deps: RedownloaderDeps) -> None:
    if not applies("retry", event.request, deps.default_fallbacks):
        log.info("policy_excludes", request_id=event.request_id, fallback="retry")
        return
    await _schedule_or_give_up(event, attempt=1, reason=event.reason_code, deps=deps)


async def handle_retry_due(due: RedownloadDue, deps: RedownloaderDeps) -> None:
    attempt = due.retry_attempt
    event = due.unavailable
    logger = log.bind(request_id=event.request_id, attempt=attempt)
    if _expired(event, deps):
        await _give_up(event, "expired", attempt - 1, deps)
        return
    client = deps.providers.get(event.provider)
    index = event.variant_index
    key = video_key(event.request_id, index, event.generation_id)
    stored = await deps.storage.stat(key)
    if stored is None:
        if client is None:
            await _give_up(
                event,
                "max_attempts",
                attempt - 1,
                deps,
                f"provider {event.provider!r} is not configured here",
            )
            return
        try:
            stored = await store_video(
                client,
                deps.storage,
                job_id=event.provider_job_id,
                generation_id=event.generation_id,
                key=key,
                policy=deps.download,
            )
        except ProviderError as exc:
            code = "transient_error" if exc.retryable else exc.code
            logger.info("redownload_failed", reason_code=code, status=exc.status_code)
            await _schedule_or_give_up(event, attempt=attempt + 1, reason=code, deps=deps)
            return
    logger.info("redownload_stored", url=stored.url)
    await deps.publisher.publish(
        real_video_stored(
            request_id=event.request_id,
            causation_id=event.event_id,
            provider=event.provider,
            provider_job_id=event.provider_job_id,
            generation_id=event.generation_id,
            variant_index=index,
            stored=stored,
        )
    )


def _expired(event: DownloadUnavailable, deps: RedownloaderDeps, after_s: float = 0) -> bool:
    return event.expires_at is not None and deps.now() + timedelta(seconds=after_s) >= (
        event.expires_at
    )


async def _schedule_or_give_up(
    event: DownloadUnavailable, *, attempt: int, reason: str, deps: RedownloaderDeps
) -> None:
    if attempt > deps.max_attempts:
        await _give_up(event, "max_attempts", attempt - 1, deps)
        return
    delay = next_delay(attempt, deps.initial_s, deps.max_interval_s)
    if _expired(event, deps, after_s=delay):
        # The next try would come after the asset is gone: one last try just before expiry
        # when there is room, otherwise stop now.
        assert event.expires_at is not None
        remaining = (event.expires_at - deps.now()).total_seconds()
        if remaining <= 1.0:
            await _give_up(event, "expired", attempt - 1, deps)
            return
        delay = remaining - 1.0
    next_at = deps.now() + timedelta(seconds=delay)
    await deps.publisher.publish(
        DownloadRetryScheduled(
            event_id=derive_event_id(
                event.request_id, "DownloadRetryScheduled", event.generation_id, attempt
            ),
            request_id=event.request_id,
            causation_id=event.event_id,
            provider=event.provider,
            provider_job_id=event.provider_job_id,
            endpoint_host=event.endpoint_host,
            generation_id=event.generation_id,
            attempt=attempt,
            next_attempt_at=next_at,
            last_reason_code=reason,
            attempted_at=deps.now() if attempt > 1 else event.attempted_at,
            expires_at=event.expires_at,
        )
    )
    await deps.publisher.schedule(
        delay_s=delay,
        target_topic=deps.topics.due("redownloader"),
        key=event.request_id,
        payload=RedownloadDue(retry_attempt=attempt, unavailable=event).model_dump(mode="json"),
        timer_id=derive_event_id(
            event.request_id, "redownload-timer", event.generation_id, attempt
        ),
    )


async def _give_up(
    event: DownloadUnavailable,
    reason: str,
    attempts: int,
    deps: RedownloaderDeps,
    message: str | None = None,
) -> None:
    log.warning("redownload_gave_up", request_id=event.request_id, reason=reason, attempts=attempts)
    text = message or (
        f"the provider's asset expired at {event.expires_at.isoformat()}"
        if reason == "expired" and event.expires_at
        else f"no download after {attempts} retries"
    )
    await deps.publisher.publish(
        DownloadGaveUp(
            event_id=derive_event_id(event.request_id, "DownloadGaveUp", event.generation_id),
            request_id=event.request_id,
            causation_id=event.event_id,
            provider=event.provider,
            provider_job_id=event.provider_job_id,
            endpoint_host=event.endpoint_host,
            generation_id=event.generation_id,
            reason_code="expired" if reason == "expired" else "max_attempts",
            attempts=attempts,
            message=text,
            request=event.request,
        )
    )
