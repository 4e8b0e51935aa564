"""Fetcher wiring: job.succeeded -> video.stored / download.unavailable."""

from __future__ import annotations

from schemas.events import DownloadUnavailable, JobSucceeded, VideoStored
from services.fetcher.handlers import FetcherDeps, handle_job_succeeded
from vidpipe.settings import Settings
from vidpipe.stage import Deps, Resources, Stage
from vidpipe.usecases.fetch_video import DownloadPolicy

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap_servers: str | None = None) -> Stage:
    stage = Stage(
        "fetcher",
        settings,
        bootstrap_servers=bootstrap_servers,
        publishes=(VideoStored, DownloadUnavailable),
    )

    @stage.dependencies
    async def build_deps(resources: Resources) -> FetcherDeps:
        return FetcherDeps(
            providers=resources.providers(),
            storage=resources.storage(),
            publisher=stage.publisher,
            download=DownloadPolicy(
                max_bytes=settings.max_video_bytes,
                attempts=settings.download_attempts,
                deadline_s=settings.download_deadline_s,
            ),
        )

    # Consumer batches, their downloads side by side (vidpipe.bus.batches): one round of them
    # per batch, and, since a large download may take minutes, room before the group evicts it.
    @stage.keyed_batches(
        {stage.topics.job_succeeded: JobSucceeded},
        max_records=settings.handler_concurrency,
        max_poll_interval_ms=30 * 60 * 1000,
    )
    async def on_succeeded(event: JobSucceeded, deps: Deps[FetcherDeps]) -> None:
        await handle_job_succeeded(event, deps)

    return stage
