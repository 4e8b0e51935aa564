"""Redownloader: retries a download that was unavailable, on durable timers, until it expires.

Reads:   {prefix}download.unavailable   DownloadUnavailable -> schedules the first retry
         {prefix}redownloader.due       RedownloadDue (released by this stage's timers)
Writes:  {prefix}video.stored           VideoStored (placeholder=false) when a retry succeeds
         {prefix}download.retry         DownloadRetryScheduled, before each wait
         {prefix}download.gaveup        DownloadGaveUp (expired, or out of attempts)
         {prefix}timers.redownloader    Timer carrying the next attempt

The seed's "background job that retries every hour", without cron. When each retry goes and when
to give up is `vidpipe.policy.redownload` (intervals doubling from `initial_s` up to
`max_interval_s`), never past the fetch deadline: the provider's `expires_at`, or its documented
result lifetime when it states none, less a margin (`vidpipe.policy.expiry`). A success goes
through the fetcher's own streamed, validated store path
(`vidpipe.usecases.fetch_video.fetch_and_store`). A policy with neither `retry` nor `failover`
is given up at once (`DownloadGaveUp`, `not_pursued`, 0 attempts), so the request ends instead
of resting as `download_unavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from schemas.events import (
    DownloadGaveUp,
    DownloadRetryScheduled,
    DownloadUnavailable,
    FallbackName,
    RedownloadDue,
    clip_message,
    derive_event_id,
    utcnow,
)
from schemas.topics import Topics
from vidpipe.bus import Publisher
from vidpipe.errors import ProviderError
from vidpipe.policy.expiry import fetch_deadline
from vidpipe.policy.fallbacks import policy, pursues_real_video
from vidpipe.policy.redownload import (
    GiveUp,
    RetrySchedule,
    before_attempt,
    no_client,
    plan_retry,
)
from vidpipe.providers.base import ProviderClient
from vidpipe.storage import VideoStorage
from vidpipe.usecases.fetch_video import (
    DownloadPolicy,
    NoClient,
    VideoTarget,
    expected_seconds,
    failure_code,
    fetch_and_store,
)

__all__ = ["RedownloaderDeps", "handle_download_unavailable", "handle_retry_due"]

log = structlog.get_logger("vidpipe.redownloader")

_NOT_PURSUED = "the request's fallbacks include neither retry nor failover: no further download"


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
    clock: Callable[[], datetime] = utcnow

    @property
    def schedule(self) -> RetrySchedule:
        return RetrySchedule(self.initial_s, self.max_interval_s, self.max_attempts)


async def handle_download_unavailable(event: DownloadUnavailable, deps: RedownloaderDeps) -> None:
    fallbacks = policy(event.request, deps.default_fallbacks)
    if "retry" not in fallbacks:
        log.info("policy_excludes", request_id=event.request_id, fallback="retry")
        if not pursues_real_video(fallbacks):
            # Nothing else goes after the real video either: say so, so the request ends.
            await _give_up(event, GiveUp("not_pursued", 0, _NOT_PURSUED), deps)
        return
    await _schedule_or_give_up(event, attempt=1, reason=event.reason_code, deps=deps)


async def handle_retry_due(due: RedownloadDue, deps: RedownloaderDeps) -> None:
    attempt = due.retry_attempt
    event = due.unavailable
    logger = log.bind(request_id=event.request_id, attempt=attempt)
    expired = before_attempt(attempt, _deadline(event), deps.clock())
    if expired is not None:
        await _give_up(event, expired, deps)
        return
    target = VideoTarget(
        request_id=event.request_id,
        causation_id=event.event_id,
        provider=event.provider,
        provider_job_id=event.provider_job_id,
        generation_id=event.generation_id,
        variant_index=event.variant_index,
        expected_seconds=expected_seconds(event.request),
    )
    try:
        outcome = await fetch_and_store(
            target,
            providers=deps.providers,
            storage=deps.storage,
            policy=deps.download,
            clock=deps.clock,
        )
    except ProviderError as exc:
        code = failure_code(exc)
        logger.info("redownload_failed", reason_code=code, status=exc.status_code)
        await _schedule_or_give_up(event, attempt=attempt + 1, reason=code, deps=deps)
        return
    if isinstance(outcome, NoClient):
        await _give_up(event, no_client(attempt, outcome.provider), deps)
        return
    logger.info("redownload_stored", url=outcome.object.url)
    await deps.publisher.publish(outcome.announcement)


async def _schedule_or_give_up(
    event: DownloadUnavailable, *, attempt: int, reason: str, deps: RedownloaderDeps
) -> None:
    now = deps.clock()
    plan = plan_retry(attempt, _deadline(event), deps.schedule, now)
    if isinstance(plan, GiveUp):
        await _give_up(event, plan, deps)
        return
    await deps.publisher.publish(
        DownloadRetryScheduled(
            event_id=derive_event_id(
                event.request_id, "DownloadRetryScheduled", event.generation_id, attempt
            ),
            occurred_at=now,
            request_id=event.request_id,
            causation_id=event.event_id,
            provider=event.provider,
            provider_job_id=event.provider_job_id,
            endpoint_host=event.endpoint_host,
            generation_id=event.generation_id,
            attempt=attempt,
            next_attempt_at=plan.at,
            last_reason_code=reason,
            # The first retry follows the fetcher's attempt; later ones follow our own.
            attempted_at=now if attempt > 1 else event.attempted_at,
            expires_at=event.expires_at,
        )
    )
    await deps.publisher.schedule(
        delay_s=plan.delay_s,
        target_topic=deps.topics.due("redownloader"),
        key=event.request_id,
        payload=RedownloadDue(retry_attempt=attempt, unavailable=event).model_dump(mode="json"),
        timer_id=derive_event_id(
            event.request_id, "redownload-timer", event.generation_id, attempt
        ),
    )


def _deadline(event: DownloadUnavailable) -> datetime | None:
    """The last moment to try: before the provider's URL dies (`vidpipe.policy.expiry`), from the
    job's own expiry or, when it states none, the provider's documented lifetime."""
    return fetch_deadline(event.provider, event.expires_at, event.attempted_at)


async def _give_up(event: DownloadUnavailable, verdict: GiveUp, deps: RedownloaderDeps) -> None:
    log.warning(
        "redownload_gave_up",
        request_id=event.request_id,
        reason=verdict.reason,
        attempts=verdict.attempts,
    )
    await deps.publisher.publish(
        DownloadGaveUp(
            event_id=derive_event_id(event.request_id, "DownloadGaveUp", event.generation_id),
            occurred_at=deps.clock(),
            request_id=event.request_id,
            causation_id=event.event_id,
            provider=event.provider,
            provider_job_id=event.provider_job_id,
            endpoint_host=event.endpoint_host,
            generation_id=event.generation_id,
            reason_code=verdict.reason,
            attempts=verdict.attempts,
            message=clip_message(verdict.message),
            request=event.request,
        )
    )
