"""Placeholder wiring: download.unavailable -> video.stored (placeholder=true)."""

from __future__ import annotations

import httpx

from schemas.events import DownloadUnavailable, VideoStored
from services.placeholder.handlers import (
    PlaceholderDeps,
    bounded_image_fetcher,
    handle_download_unavailable,
)
from vidpipe.settings import Settings
from vidpipe.stage import Stage

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap: str | None = None) -> Stage:
    stage = Stage("placeholder", settings, bootstrap=bootstrap)
    stage.publishes(VideoStored)
    topics = stage.topics
    deps: PlaceholderDeps | None = None

    async def startup() -> None:
        nonlocal deps
        storage = stage.open_storage()
        # Redirects are followed by fetch_bounded itself, so each hop is vetted again.
        client = httpx.AsyncClient(timeout=settings.http_timeout_s, follow_redirects=False)
        stage.closing(client.aclose)
        deps = PlaceholderDeps(
            storage=storage,
            publisher=stage.publisher,
            fallback_default=settings.fallback_default,
            fetch_image=bounded_image_fetcher(
                client,
                max_bytes=settings.max_input_image_bytes,
                allow_private=settings.allow_private_urls,
                timeout_s=settings.http_timeout_s,
            ),
            max_bytes=settings.max_video_bytes,
        )

    stage.on_startup(startup)

    @stage.subscriber(topics.download_unavailable)
    async def on_unavailable(event: DownloadUnavailable) -> None:
        assert deps is not None
        await handle_download_unavailable(event, deps)

    return stage
