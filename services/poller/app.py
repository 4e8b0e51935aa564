"""Poller wiring: job.submitted + poller.due + poller.hinted -> job.progressed / job.succeeded /
job.failed."""

from __future__ import annotations

from schemas.events import (
    JobFailed,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    PollDue,
    PollHinted,
)
from services.poller.handlers import (
    PollerDeps,
    handle_job_submitted,
    handle_poll_due,
    handle_poll_hinted,
)
from vidpipe.db.ledger import BatchedLedger
from vidpipe.settings import Settings
from vidpipe.stage import Deps, Resources, Stage

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap_servers: str | None = None) -> Stage:
    stage = Stage(
        "poller",
        settings,
        bootstrap_servers=bootstrap_servers,
        timers=True,
        publishes=(JobProgressed, JobSucceeded, JobFailed),
    )
    topics = stage.topics

    @stage.dependencies
    async def build_deps(resources: Resources) -> PollerDeps:
        return PollerDeps(
            providers=resources.providers(),
            publisher=stage.publisher,
            topics=topics,
            # The submitter's ledger: a cancelled job is checked no more (services/poller);
            # a batch's checks ask it together.
            gate=BatchedLedger(await resources.engine()),
            first_s=settings.poll_first_s,
            interval_s=settings.poll_interval_s,
            max_interval_s=settings.poll_max_interval_s,
            age_share=settings.poll_age_share,
        )

    # Consumer batches, their jobs checked side by side (vidpipe.bus.batches).
    @stage.keyed_batches({topics.job_submitted: JobSubmitted})
    async def on_submitted(event: JobSubmitted, deps: Deps[PollerDeps]) -> None:
        await handle_job_submitted(event, deps)

    # Timed checks and webhooks' out-of-turn ones (services/poller), on one consumer.
    @stage.keyed_batches({topics.due("poller"): PollDue, topics.poll_hinted: PollHinted})
    async def on_due(event: PollDue | PollHinted, deps: Deps[PollerDeps]) -> None:
        if isinstance(event, PollHinted):
            await handle_poll_hinted(event, deps)
        else:
            await handle_poll_due(event, deps)

    return stage
