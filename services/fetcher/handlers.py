"""Fetcher: downloads each generated video, streamed and validated, into storage.

Reads:   {prefix}job.succeeded          JobSucceeded
Writes:  {prefix}video.stored           VideoStored (placeholder=false), one per generation
         {prefix}download.unavailable   DownloadUnavailable, when the provider will not hand the
                                        video over (404, not an MP4, errors that outlast retries)

Rules (from what real users tripped on):
- Retry the *download* on its own, a few times with backoff; never resubmit the job.
- Stream into storage: memory does not grow with the video's size.
- Check status, content type and the whole MP4 (box structure while streaming, then a decoded
  first frame, and a duration close to the request's `seconds`) before anything is stored under
  its name.
- Idempotent: a video already stored under its key is announced again, not fetched again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from schemas.events import (
    DownloadUnavailable,
    JobSucceeded,
    clip_message,
    derive_event_id,
    utcnow,
)
from vidpipe.bus import Publisher
from vidpipe.errors import ProviderError
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

__all__ = ["FetcherDeps", "handle_job_succeeded"]

log = structlog.get_logger("vidpipe.fetcher")


@dataclass
class FetcherDeps:
    providers: Mapping[str, ProviderClient]
    storage: VideoStorage
    publisher: Publisher
    download: DownloadPolicy = field(default_factory=DownloadPolicy)
    clock: Callable[[], datetime] = utcnow


async def handle_job_succeeded(event: JobSucceeded, deps: FetcherDeps) -> None:
    for index, generation_id in enumerate(event.generation_ids):
        await _fetch_one(event, index, generation_id, deps)


async def _fetch_one(
    event: JobSucceeded, index: int, generation_id: str, deps: FetcherDeps
) -> None:
    logger = log.bind(request_id=event.request_id, generation_id=generation_id)
    target = VideoTarget(
        request_id=event.request_id,
        causation_id=event.event_id,
        provider=event.provider,
        provider_job_id=event.provider_job_id,
        generation_id=generation_id,
        variant_index=index,
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
        logger.warning("download_unavailable", reason_code=code, status=exc.status_code)
        await _unavailable(deps, event, index, generation_id, code, exc.status_code, str(exc))
        return
    if isinstance(outcome, NoClient):
        await _unavailable(
            deps,
            event,
            index,
            generation_id,
            "unknown_provider",
            None,
            f"provider {outcome.provider!r} is not configured in this fetcher",
        )
        return
    if outcome.fetched:
        logger.info("video_stored", url=outcome.object.url, size_bytes=outcome.object.size_bytes)
    await deps.publisher.publish(outcome.announcement)


async def _unavailable(
    deps: FetcherDeps,
    event: JobSucceeded,
    index: int,
    generation_id: str,
    code: str,
    http_status: int | None,
    message: str,
) -> None:
    now = deps.clock()
    await deps.publisher.publish(
        DownloadUnavailable(
            event_id=derive_event_id(event.request_id, "DownloadUnavailable", generation_id),
            occurred_at=now,
            request_id=event.request_id,
            causation_id=event.event_id,
            provider=event.provider,
            provider_job_id=event.provider_job_id,
            endpoint_host=event.endpoint_host,
            generation_id=generation_id,
            reason_code=code,
            http_status=http_status,
            message=clip_message(message),
            attempted_at=now,
            expires_at=event.expires_at,
            request=event.request,
            variant_index=index,
        )
    )
