"""Fetcher wiring: job.succeeded -> video.stored / download.unavailable."""

from __future__ import annotations

from schemas.events import DownloadUnavailable, JobSucceeded, VideoStored
from services.fetcher.handlers import FetcherDeps, handle_job_succeeded
from vidpipe.settings import Settings
from vidpipe.stage import Stage
from vidpipe.usecases.fetch_video import DownloadPolicy

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap: str | None = None) -> Stage:
    stage = Stage("fetcher", settings, bootstrap=bootstrap)
    stage.publishes(VideoStored, DownloadUnavailable)
    topics = stage.topics
    deps: FetcherDeps | None = None

    async def startup() -> None:
        nonlocal deps
        providers = stage.open_providers()
        storage = stage.open_storage()
        deps = FetcherDeps(
            providers=providers,
            storage=storage,
            publisher=stage.publisher,
            download=DownloadPolicy(
                max_bytes=settings.max_video_bytes, attempts=settings.download_attempts
            ),
        )

    stage.on_startup(startup)

    # A large download may take minutes: give the handler room before the group evicts it.
    @stage.subscriber(topics.job_succeeded, max_poll_interval_ms=30 * 60 * 1000)
    async def on_succeeded(event: JobSucceeded) -> None:
        assert deps is not None
        await handle_job_succeeded(event, deps)

    return stage
