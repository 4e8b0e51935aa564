"""Poller wiring: job.submitted + poller.due -> job.progressed / job.succeeded / job.failed."""

from __future__ import annotations

from schemas.events import JobFailed, JobProgressed, JobSubmitted, JobSucceeded, PollDue
from services.poller.handlers import PollerDeps, handle_job_submitted, handle_poll_due
from vidpipe.settings import Settings
from vidpipe.stage import Stage

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap: str | None = None) -> Stage:
    stage = Stage("poller", settings, bootstrap=bootstrap, timers=True)
    stage.publishes(JobProgressed, JobSucceeded, JobFailed)
    topics = stage.topics
    deps: PollerDeps | None = None

    async def startup() -> None:
        nonlocal deps
        providers = stage.open_providers()
        deps = PollerDeps(
            providers=providers,
            publisher=stage.publisher,
            topics=topics,
            interval_s=settings.poll_interval_s,
            max_interval_s=settings.poll_max_interval_s,
        )

    stage.on_startup(startup)

    @stage.subscriber(topics.job_submitted)
    async def on_submitted(event: JobSubmitted) -> None:
        assert deps is not None
        await handle_job_submitted(event, deps)

    @stage.subscriber(topics.poller_due)
    async def on_due(event: PollDue) -> None:
        assert deps is not None
        await handle_poll_due(event, deps)

    return stage
