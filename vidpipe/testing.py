"""In-memory collaborators for tests, built on the same interfaces as the real adapters.

Shipped beside the interfaces (as httpx ships `MockTransport`), so anyone testing code that uses
vidpipe's stages can inject them; nothing in production imports this module.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from schemas.events import Event
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


class MemoryPublisher:
    """Collects what a handler would publish; for unit tests of handlers."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.scheduled: list[tuple[float, str, str, dict[str, Any]]] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)

    async def schedule(
        self,
        *,
        delay_s: float,
        target_topic: str,
        key: str,
        payload: dict[str, Any],
        timer_id: uuid.UUID | None = None,
    ) -> None:
        self.scheduled.append((delay_s, target_topic, key, json.loads(json.dumps(payload))))

    def of_type(self, cls: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, cls)]
