"""Placeholder wiring: download.unavailable -> video.stored (placeholder=true)."""

from __future__ import annotations

from schemas.events import DownloadUnavailable, VideoStored
from services.placeholder.handlers import PlaceholderDeps, handle_download_unavailable
from vidpipe.settings import Settings
from vidpipe.stage import Deps, Resources, Stage

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap_servers: str | None = None) -> Stage:
    stage = Stage(
        "placeholder", settings, bootstrap_servers=bootstrap_servers, publishes=(VideoStored,)
    )

    @stage.dependencies
    async def build_deps(resources: Resources) -> PlaceholderDeps:
        return PlaceholderDeps(
            storage=resources.storage(),
            publisher=stage.publisher,
            fallback_default=settings.fallback_default,
            fetch_image=resources.image_fetcher(),
            max_bytes=settings.max_video_bytes,
        )

    @stage.subscriber(stage.topics.download_unavailable)
    async def on_unavailable(event: DownloadUnavailable, deps: Deps[PlaceholderDeps]) -> None:
        await handle_download_unavailable(event, deps)

    return stage
