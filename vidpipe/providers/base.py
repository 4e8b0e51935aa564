"""The small interface every provider client implements, and the types it speaks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from schemas.events import JobState

__all__ = ["InputImage", "ProviderClient", "ProviderJob", "VideoDownload", "VideoSpec"]


@dataclass(frozen=True)
class InputImage:
    data: bytes
    content_type: str  # image/jpeg, image/png or image/webp
    filename: str = "input.png"


@dataclass(frozen=True)
class VideoSpec:
    """What to generate, in provider-neutral terms."""

    prompt: str
    width: int = 1280
    height: int = 720
    seconds: int = 5
    variants: int = 1
    model: str | None = None  # None: the client's configured model / deployment
    image: InputImage | None = None


@dataclass(frozen=True)
class ProviderJob:
    """A provider job, normalised. `raw_status` keeps the provider's own word."""

    job_id: str
    status: JobState
    raw_status: str
    progress: int | None = None
    generation_ids: list[str] = field(default_factory=list)
    expires_at: datetime | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    # The provider's hint for the next status check (openai-poll-after-ms), in seconds.
    poll_after_s: float | None = None
    model: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


@dataclass
class VideoDownload:
    """An open, streamed download: iterate `chunks` inside the context manager."""

    status_code: int
    content_type: str
    content_length: int | None
    chunks: AsyncIterator[bytes]


@runtime_checkable
class ProviderClient(Protocol):
    #: Registry name: "azure-sora" or "openai-videos".
    name: str
    #: The endpoint host (no scheme, path, or credentials) for events and records.
    endpoint_host: str

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob: ...

    async def get_job(self, job_id: str) -> ProviderJob: ...

    def download(
        self, job_id: str, generation_id: str
    ) -> AbstractAsyncContextManager[VideoDownload]:
        """Stream the video bytes. Raises DownloadNotAvailable, or a retryable error."""
        ...

    async def aclose(self) -> None: ...
