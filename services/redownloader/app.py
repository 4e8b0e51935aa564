"""Redownloader wiring: download.unavailable + redownloader.due -> video.stored / retry events."""

from __future__ import annotations

from schemas.events import (
    DownloadGaveUp,
    DownloadRetryScheduled,
    DownloadUnavailable,
    RedownloadDue,
    VideoStored,
)
from services.redownloader.handlers import (
    RedownloaderDeps,
    handle_download_unavailable,
    handle_retry_due,
)
from vidpipe.settings import Settings
from vidpipe.stage import Deps, Resources, Stage
from vidpipe.usecases.fetch_video import DownloadPolicy

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap_servers: str | None = None) -> Stage:
    stage = Stage(
        "redownloader",
        settings,
        bootstrap_servers=bootstrap_servers,
        timers=True,
        publishes=(VideoStored, DownloadRetryScheduled, DownloadGaveUp),
    )
    topics = stage.topics

    @stage.dependencies
    async def build_deps(resources: Resources) -> RedownloaderDeps:
        return RedownloaderDeps(
            providers=resources.providers(),
            storage=resources.storage(),
            publisher=stage.publisher,
            topics=topics,
            default_fallbacks=settings.fallback_default,
            initial_s=settings.redownload_initial_s,
            max_interval_s=settings.redownload_max_interval_s,
            max_attempts=settings.redownload_max_attempts,
            download=DownloadPolicy(
                max_bytes=settings.max_video_bytes,
                attempts=settings.download_attempts,
                deadline_s=settings.download_deadline_s,
            ),
        )

    @stage.subscriber(topics.download_unavailable)
    async def on_unavailable(event: DownloadUnavailable, deps: Deps[RedownloaderDeps]) -> None:
        await handle_download_unavailable(event, deps)

    # A retried download may take minutes: give the handler room before the group evicts it.
    @stage.subscriber(topics.due("redownloader"), max_poll_interval_ms=30 * 60 * 1000)
    async def on_due(due: RedownloadDue, deps: Deps[RedownloaderDeps]) -> None:
        await handle_retry_due(due, deps)

    return stage
