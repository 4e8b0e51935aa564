"""Placeholder: stores a short stand-in video when the real one cannot be had (seed option 1).

Reads:   {prefix}download.unavailable   DownloadUnavailable
Writes:  {prefix}video.stored           VideoStored (placeholder=true, variant_index=0), at most
                                        one stored video per request

Rules:
- Only when the request's fallbacks (or the configured default) include "placeholder"; otherwise
  log `policy_excludes` and do nothing.
- With an input image: a slow pan and zoom over it; without one, or when it cannot be fetched or
  decoded: a title card with the prompt. Either way a caption says the video is on its way, in
  the request's language (the notifier's resolver: `vidpipe.policy.messages.resolve_language`).
- The image is fetched by the one input-image fetcher (`vidpipe.net.images.InputImageFetcher`:
  the SSRF guard, size-bounded), as the submitter fetches it.
- Rendering runs in a worker thread, so the event loop (and the Kafka heartbeat) keeps going.
- Idempotent: one key per request (`{request_id}/placeholder.mp4`) and a deterministic event id.
  A placeholder already stored is announced again, never rendered again, so several variants or
  a redelivery still yield one placeholder.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from schemas.events import DownloadUnavailable, FallbackName, VideoStored, derive_event_id, utcnow
from vidpipe.bus import Publisher
from vidpipe.errors import UnsafeURLError
from vidpipe.media.placeholder import PlaceholderJob, RenderedPlaceholder, render_placeholder
from vidpipe.net.images import InputImage
from vidpipe.policy.fallbacks import applies
from vidpipe.policy.messages import resolve_language
from vidpipe.storage import StoredObject, VideoStorage
from vidpipe.storage.base import key_segment

__all__ = [
    "ImageFetcher",
    "PlaceholderDeps",
    "Renderer",
    "handle_download_unavailable",
    "placeholder_key",
]

log = structlog.get_logger("vidpipe.placeholder")

#: Fetches an input image URL (a `vidpipe.net.images.InputImageFetcher`); raises UnsafeURLError
#: (or its subclass InputFetchError) when it cannot.
ImageFetcher = Callable[[str], Awaitable[InputImage]]
#: Blocking: called in a worker thread.
Renderer = Callable[[PlaceholderJob], RenderedPlaceholder]

_CHUNK = 256 * 1024


@dataclass
class PlaceholderDeps:
    storage: VideoStorage
    publisher: Publisher
    fallback_default: list[FallbackName]
    #: None: never fetch input images (always the title card).
    fetch_image: ImageFetcher | None = None
    render: Renderer = render_placeholder
    max_bytes: int = 64 * 1024 * 1024
    seconds: float = 3.0
    fps: int = 24
    clock: Callable[[], datetime] = utcnow


def placeholder_key(request_id: str) -> str:
    """Where a request's placeholder is stored: one per request, whatever the variant. A valid
    key for any request id (every id the schema accepts is its own segment)."""
    return f"{key_segment(request_id)}/placeholder.mp4"


async def handle_download_unavailable(event: DownloadUnavailable, deps: PlaceholderDeps) -> None:
    logger = log.bind(request_id=event.request_id, generation_id=event.generation_id)
    if not applies("placeholder", event.request, deps.fallback_default):
        logger.info("policy_excludes", fallback="placeholder")
        return
    key = placeholder_key(event.request_id)
    stored = await deps.storage.stat(key)
    if stored is None:
        stored = await _render_and_store(event, key, deps)
    else:
        logger.info("placeholder_already_stored", url=stored.url)
    await deps.publisher.publish(
        VideoStored(
            # One id per request (not per variant): every announcement of it is the same event.
            event_id=derive_event_id(event.request_id, "VideoStored", "placeholder"),
            occurred_at=deps.clock(),
            request_id=event.request_id,
            causation_id=event.event_id,
            provider=event.provider,
            provider_job_id=event.provider_job_id,
            generation_id=event.generation_id,
            variant_index=0,
            storage_url=stored.url,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            content_type=stored.content_type,
            placeholder=True,
        )
    )


async def _render_and_store(
    event: DownloadUnavailable, key: str, deps: PlaceholderDeps
) -> StoredObject:
    logger = log.bind(request_id=event.request_id, generation_id=event.generation_id)
    request = event.request
    image: bytes | None = None
    if request is not None and request.input_image_url and deps.fetch_image is not None:
        try:
            image = (await deps.fetch_image(request.input_image_url)).data
        except UnsafeURLError as exc:
            # A placeholder is a stand-in: without the image it is a title card, not a failure.
            logger.warning("placeholder_image_unavailable", reason=str(exc))
    job = PlaceholderJob(
        prompt=request.prompt if request is not None else "",
        size=request.size if request is not None else "1280x720",
        language=resolve_language(request.metadata if request is not None else None),
        image=image,
        seconds=deps.seconds,
        fps=deps.fps,
    )
    # CPU-bound encoding off the event loop, so heartbeats and other handlers keep running.
    rendered = await asyncio.to_thread(deps.render, job)
    if rendered.image_error is not None:
        logger.warning("placeholder_image_unusable", reason=rendered.image_error)
    stored = await deps.storage.put_stream(
        key, _chunks(rendered.data), content_type="video/mp4", max_bytes=deps.max_bytes
    )
    logger.info(
        "placeholder_stored",
        url=stored.url,
        size_bytes=stored.size_bytes,
        kind=rendered.kind,
        width=rendered.width,
        height=rendered.height,
    )
    return stored


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        yield bytes(view[start : start + _CHUNK])
