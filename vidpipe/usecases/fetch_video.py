"""The one path from a provider's content endpoint into storage: streamed, validated, retried.

The fetcher and the redownloader both call `fetch_and_store`: look in storage first (a video
already stored is announced again, never fetched again), else download and store it through
`store_video`, and build the VideoStored. So a video is checked the same way (status, content
type, MP4 box structure and a decode, size, the duration the request asked for, an overall
deadline) and announced under the same event id whoever fetched it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from schemas.events import RequestSnapshot, VideoStored, derive_event_id
from vidpipe.errors import ProviderError, ProviderUnavailable
from vidpipe.metrics import current as current_metrics
from vidpipe.providers.base import ProviderClient
from vidpipe.storage import StoredObject, VideoStorage
from vidpipe.storage.base import MAX_SEGMENT_CHARS, key_segment

__all__ = [
    "DownloadPolicy",
    "NoClient",
    "Stored",
    "VideoTarget",
    "expected_seconds",
    "failure_code",
    "fetch_and_store",
    "store_video",
    "video_key",
]


@dataclass(frozen=True)
class DownloadPolicy:
    max_bytes: int = 512 * 1024 * 1024
    #: Attempts in place for transient errors (5xx, timeouts, truncated transfers).
    attempts: int = 3
    #: A tenacity wait; tests pass `wait_none()`.
    wait: Callable[..., float] | None = None
    #: The whole download of one video, every attempt and wait included, must end within this;
    #: past it the download fails as ProviderUnavailable (transient: reported, retried later).
    deadline_s: float = 600.0


def video_key(request_id: str, index: int, generation_id: str) -> str:
    """Where variant `index` of a request is stored (the same key on every retry): a valid key
    for any ids, as long ones are hashed down to a file name the filesystem takes."""
    # ":" too becomes "_" in the generation's part, as it always did, so existing keys stay put.
    safe_generation = "".join(
        c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in generation_id
    )
    name = key_segment(f"{index}-{safe_generation}", max_chars=MAX_SEGMENT_CHARS - len(".mp4"))
    return f"{key_segment(request_id)}/{name}.mp4"


def expected_seconds(request: RequestSnapshot | None) -> float | None:
    """How long a video fetched for `request` must last, or None when the request is unknown.

    It is what the provider was asked for: the length the submitter sent after mapping the
    request onto what the provider accepts (`request.sent`, vidpipe.policy.request_mapping),
    else the request's own `seconds`. The clients send `VideoSpec.seconds` unchanged (Azure
    `n_seconds`, /v1/videos `seconds`); tests/unit/test_expected_duration.py pins that.
    """
    if request is None:
        return None
    if request.sent is not None and not request.sent.length_checked:
        return None  # the provider chose the length (Gemini Omni): any positive duration
    return float(request.sent.seconds if request.sent is not None else request.seconds)


@dataclass(frozen=True)
class VideoTarget:
    """One generated video of one request: where to fetch it and what caused the fetch."""

    request_id: str
    causation_id: uuid.UUID
    provider: str
    provider_job_id: str
    generation_id: str
    variant_index: int
    #: How long the video must last (`expected_seconds`); None: any positive duration.
    expected_seconds: float | None = None

    @property
    def key(self) -> str:
        return video_key(self.request_id, self.variant_index, self.generation_id)


@dataclass(frozen=True)
class Stored:
    """The video is in storage; `announcement` says so."""

    announcement: VideoStored
    object: StoredObject
    #: False when it was already stored (a redelivery, or the other stage got there first).
    fetched: bool


@dataclass(frozen=True)
class NoClient:
    """Not in storage, and this process has no client for the target's provider."""

    provider: str


async def fetch_and_store(
    target: VideoTarget,
    *,
    providers: Mapping[str, ProviderClient],
    storage: VideoStorage,
    policy: DownloadPolicy,
    clock: Callable[[], datetime],
) -> Stored | NoClient:
    """Make sure `target` is stored, and say so. Raises the provider's error (a ProviderError)
    when the provider will not hand the video over."""
    key = target.key
    found = await storage.stat(key)
    if found is not None:
        return Stored(_announcement(target, found, clock()), found, fetched=False)
    client = providers.get(target.provider)
    if client is None:
        return NoClient(target.provider)
    stored = await store_video(
        client,
        storage,
        job_id=target.provider_job_id,
        generation_id=target.generation_id,
        key=key,
        policy=policy,
        expected_seconds=target.expected_seconds,
    )
    return Stored(_announcement(target, stored, clock()), stored, fetched=True)


def failure_code(error: ProviderError) -> str:
    """The reason code a failed download is reported under: any error worth retrying is a
    "transient_error", whatever its class; the others keep their own code."""
    return "transient_error" if error.retryable else error.code


async def store_video(
    client: ProviderClient,
    storage: VideoStorage,
    *,
    job_id: str,
    generation_id: str,
    key: str,
    policy: DownloadPolicy,
    expected_seconds: float | None = None,
) -> StoredObject:
    """Download and store one video; raises the provider's error when it cannot be had.

    A video that does not last about `expected_seconds` (when given) is InvalidVideo
    (`invalid_content`, terminal: a second download would fetch the same file) and not stored.

    A download that has not finished within `policy.deadline_s` (a server trickling bytes,
    retries piling up) is cancelled, leaving nothing stored, and raised as ProviderUnavailable.
    """
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=policy.wait or wait_exponential_jitter(initial=1, max=20),
        retry=retry_if_exception(lambda exc: bool(getattr(exc, "retryable", False))),
        reraise=True,
    )
    deadline = asyncio.timeout(policy.deadline_s)
    started = time.monotonic()
    outcome = "failed"
    try:
        async with deadline:
            async for attempt in retrying:
                with attempt:
                    async with client.download(job_id, generation_id) as download:
                        stored = await storage.put_stream(
                            key,
                            download.chunks,
                            content_type=download.content_type,
                            max_bytes=policy.max_bytes,
                            expected_length=download.content_length,
                            expected_seconds=expected_seconds,
                        )
                        outcome = "stored"
                        current_metrics().download(
                            client.name, outcome, time.monotonic() - started, stored.size_bytes
                        )
                        return stored
    except TimeoutError:
        if not deadline.expired():
            raise
        raise ProviderUnavailable(
            f"download did not finish within {policy.deadline_s:g}s"
        ) from None
    finally:
        if outcome == "failed":
            current_metrics().download(client.name, outcome, time.monotonic() - started, 0)
    raise AssertionError("unreachable: tenacity reraises the last error")


def _announcement(target: VideoTarget, stored: StoredObject, now: datetime) -> VideoStored:
    # The id depends only on the request and the generation, so the fetcher and the
    # redownloader announce one and the same event.
    return VideoStored(
        event_id=derive_event_id(target.request_id, "VideoStored", target.generation_id, False),
        occurred_at=now,
        request_id=target.request_id,
        causation_id=target.causation_id,
        provider=target.provider,
        provider_job_id=target.provider_job_id,
        generation_id=target.generation_id,
        variant_index=target.variant_index,
        storage_url=stored.url,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        content_type=stored.content_type,
        placeholder=False,
    )
