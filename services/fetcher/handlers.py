"""Fetcher: downloads each generated video, streamed and validated, into storage.

Reads:   {prefix}job.succeeded          JobSucceeded
Writes:  {prefix}video.stored           VideoStored (placeholder=false), one per generation
         {prefix}download.unavailable   DownloadUnavailable, when the provider will not hand the
                                        video over (404, not an MP4, errors that outlast retries)

Rules (from what real users tripped on):
- Retry the *download* on its own, a few times with backoff; never resubmit the job.
- Stream into storage: memory does not grow with the video's size.
- Check status, content type and the MP4 `ftyp` box before anything is stored under its name.
- Idempotent: a video already stored under its key is announced again, not fetched again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from schemas.events import (
    DownloadUnavailable,
    JobSucceeded,
    derive_event_id,
    utcnow,
)
from vidpipe.bus import Publisher
from vidpipe.errors import ProviderError
from vidpipe.providers.base import ProviderClient
from vidpipe.storage import VideoStorage
from vidpipe.usecases.fetch_video import DownloadPolicy, real_video_stored, store_video, video_key

__all__ = ["FetcherDeps", "handle_job_succeeded"]

log = structlog.get_logger("vidpipe.fetcher")


@dataclass
class FetcherDeps:
    providers: Mapping[str, ProviderClient]
    storage: VideoStorage
    publisher: Publisher
    download: DownloadPolicy = field(default_factory=DownloadPolicy)


async def handle_job_succeeded(event: JobSucceeded, deps: FetcherDeps) -> None:
    for index, generation_id in enumerate(event.generation_ids):
        await _fetch_one(event, index, generation_id, deps)


async def _fetch_one(
    event: JobSucceeded, index: int, generation_id: str, deps: FetcherDeps
) -> None:
    logger = log.bind(request_id=event.request_id, generation_id=generation_id)
    key = video_key(event.request_id, index, generation_id)
    stored = await deps.storage.stat(key)
    if stored is None:
        client = deps.providers.get(event.provider)
        if client is None:
            await _unavailable(
                deps,
                event,
                index,
                generation_id,
                "unknown_provider",
                None,
                f"provider {event.provider!r} is not configured in this fetcher",
            )
            return
        try:
            stored = await store_video(
                client,
                deps.storage,
                job_id=event.provider_job_id,
                generation_id=generation_id,
                key=key,
                policy=deps.download,
            )
        except ProviderError as exc:
            code = "transient_error" if exc.retryable else exc.code
            logger.warning("download_unavailable", reason_code=code, status=exc.status_code)
            await _unavailable(deps, event, index, generation_id, code, exc.status_code, str(exc))
            return
        logger.info("video_stored", url=stored.url, size_bytes=stored.size_bytes)
    await deps.publisher.publish(
        real_video_stored(
            request_id=event.request_id,
            causation_id=event.event_id,
            provider=event.provider,
            provider_job_id=event.provider_job_id,
            generation_id=generation_id,
            variant_index=index,
            stored=stored,
        )
    )


async def _unavailable(
    deps: FetcherDeps,
    event: JobSucceeded,
    index: int,
    generation_id: str,
    code: str,
    http_status: int | None,
    message: str,
) -> None:
    await deps.publisher.publish(
        DownloadUnavailable(
            event_id=derive_event_id(event.request_id, "DownloadUnavailable", generation_id),
            request_id=event.request_id,
            causation_id=event.event_id,
            provider=event.provider,
            provider_job_id=event.provider_job_id,
            endpoint_host=event.endpoint_host,
            generation_id=generation_id,
            reason_code=code,
            http_status=http_status,
            message=message[:2000],
            attempted_at=utcnow(),
            expires_at=event.expires_at,
            request=event.request,
            variant_index=index,
        )
    )
