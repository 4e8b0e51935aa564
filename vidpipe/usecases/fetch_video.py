"""The one path from a provider's content endpoint into storage: streamed, validated, retried.

The fetcher and the redownloader both store videos through `store_video`, so a video is checked
the same way (status, content type, MP4 `ftyp` box, size) whoever fetched it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from schemas.events import VideoStored, derive_event_id
from vidpipe.providers.base import ProviderClient
from vidpipe.storage import StoredObject, VideoStorage

__all__ = ["DownloadPolicy", "real_video_stored", "store_video", "video_key"]


@dataclass(frozen=True)
class DownloadPolicy:
    max_bytes: int = 512 * 1024 * 1024
    #: Attempts in place for transient errors (5xx, timeouts, truncated transfers).
    attempts: int = 3
    #: A tenacity wait; tests pass `wait_none()`.
    wait: Callable[..., float] | None = None


def video_key(request_id: str, index: int, generation_id: str) -> str:
    """Where variant `index` of a request is stored (the same key on every retry)."""
    safe_generation = "".join(
        c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in generation_id
    )
    return f"{request_id}/{index}-{safe_generation}.mp4"


async def store_video(
    client: ProviderClient,
    storage: VideoStorage,
    *,
    job_id: str,
    generation_id: str,
    key: str,
    policy: DownloadPolicy,
) -> StoredObject:
    """Download and store one video; raises the provider's error when it cannot be had."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=policy.wait or wait_exponential_jitter(initial=1, max=20),
        retry=retry_if_exception(lambda exc: bool(getattr(exc, "retryable", False))),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            async with client.download(job_id, generation_id) as download:
                return await storage.put_stream(
                    key,
                    download.chunks,
                    content_type=download.content_type,
                    max_bytes=policy.max_bytes,
                    expected_length=download.content_length,
                )
    raise AssertionError("unreachable: tenacity reraises the last error")


def real_video_stored(
    *,
    request_id: str,
    causation_id: uuid.UUID,
    provider: str,
    provider_job_id: str,
    generation_id: str,
    variant_index: int,
    stored: StoredObject,
) -> VideoStored:
    """The event for a provider's video in storage. Its id depends only on the request and the
    generation, so the fetcher and the redownloader announce one and the same event."""
    return VideoStored(
        event_id=derive_event_id(request_id, "VideoStored", generation_id, False),
        request_id=request_id,
        causation_id=causation_id,
        provider=provider,
        provider_job_id=provider_job_id,
        generation_id=generation_id,
        variant_index=variant_index,
        storage_url=stored.url,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        content_type=stored.content_type,
        placeholder=False,
    )
