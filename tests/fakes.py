"""In-memory collaborators for handler unit tests (injected, never patched in)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from vidpipe.errors import ProviderError
from vidpipe.providers.base import ProviderJob, VideoDownload, VideoSpec


@dataclass
class FakeProvider:
    name: str = "azure-sora"
    endpoint_host: str = "fake.example"
    created: list[tuple[VideoSpec, str]] = field(default_factory=list)
    statuses: list[ProviderJob | ProviderError] = field(default_factory=list)
    create_error: ProviderError | None = None
    video: bytes = b""
    download_errors: list[ProviderError] = field(default_factory=list)
    downloads: int = 0

    async def create_job(self, spec: VideoSpec, *, idempotency_key: str) -> ProviderJob:
        self.created.append((spec, idempotency_key))
        if self.create_error is not None:
            raise self.create_error
        return ProviderJob(job_id=f"task_{len(self.created)}", status="queued", raw_status="queued")

    async def get_job(self, job_id: str) -> ProviderJob:
        item = self.statuses.pop(0)
        if isinstance(item, ProviderError):
            raise item
        return item

    @asynccontextmanager
    async def _download(self) -> AsyncIterator[VideoDownload]:
        self.downloads += 1
        if self.download_errors:
            raise self.download_errors.pop(0)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(self.video), 1000):
                yield self.video[i : i + 1000]

        yield VideoDownload(200, "video/mp4", len(self.video), chunks())

    def download(self, job_id: str, generation_id: str):  # type: ignore[no-untyped-def]
        return self._download()

    async def aclose(self) -> None:
        return None
