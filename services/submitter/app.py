"""Submitter wiring: generation.requested + submitter.retry -> job.submitted / job.failed."""

from __future__ import annotations

from schemas.events import GenerationRequested, JobFailed, JobSubmitted, JobSucceeded
from services.submitter.handlers import (
    SubmitterDeps,
    handle_generation_requested,
    handle_job_finished,
)
from vidpipe.db.ledger import Ledger
from vidpipe.settings import Settings
from vidpipe.stage import Stage, image_fetcher

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap: str | None = None) -> Stage:
    stage = Stage("submitter", settings, bootstrap=bootstrap, timers=True)
    stage.publishes(JobSubmitted, JobFailed)
    topics = stage.topics
    deps: SubmitterDeps | None = None

    async def startup() -> None:
        nonlocal deps
        providers = stage.open_providers()
        deps = SubmitterDeps(
            providers=providers,
            ledger=Ledger(await stage.open_engine()),
            publisher=stage.publisher,
            topics=topics,
            default_provider=settings.default_provider,
            quota=settings.providers.max_concurrent_jobs,
            fetch_image=image_fetcher(settings),
            quota_wait_s=settings.quota_wait_s,
        )

    stage.on_startup(startup)

    @stage.subscriber(topics.generation_requested, topics.submitter_retry)
    async def on_requested(event: GenerationRequested) -> None:
        assert deps is not None
        await handle_generation_requested(event, deps)

    @stage.subscriber(
        topics.job_succeeded, topics.job_failed, group_id=settings.group_id("submitter.slots")
    )
    async def on_finished(event: JobSucceeded | JobFailed) -> None:
        assert deps is not None
        await handle_job_finished(event.request_id, deps)

    return stage
