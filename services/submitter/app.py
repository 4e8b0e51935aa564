"""Submitter wiring: generation.requested + submitter.due -> job.submitted / job.failed."""

from __future__ import annotations

from schemas.events import (
    CancelRequested,
    GenerationRequested,
    JobCancelled,
    JobFailed,
    JobSubmitted,
    JobSucceeded,
)
from services.submitter.handlers import (
    SubmitterDeps,
    handle_cancel_requested,
    handle_generation_requested,
    handle_job_finished,
)
from vidpipe.db.budgets import BudgetLedger
from vidpipe.db.ledger import BatchedLedger
from vidpipe.providers import configured_providers, max_concurrent_jobs
from vidpipe.settings import Settings
from vidpipe.stage import Deps, Resources, Stage

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap_servers: str | None = None) -> Stage:
    stage = Stage(
        "submitter",
        settings,
        bootstrap_servers=bootstrap_servers,
        timers=True,
        publishes=(JobSubmitted, JobFailed, JobCancelled),
    )
    topics = stage.topics

    @stage.dependencies
    async def build_deps(resources: Resources) -> SubmitterDeps:
        # Read once: each provider's quota comes from its own settings.
        quotas = {name: max_concurrent_jobs(name) for name in configured_providers()}
        providers = resources.providers()  # opened first, closed last
        # A batch's handlers read and note their claims together (vidpipe.db.ledger).
        ledger = BatchedLedger(await resources.engine())

        async def sample_quota() -> None:
            usage = await ledger.usage()
            for provider in sorted(set(usage) | set(quotas)):
                in_use, in_flight = usage.get(provider, (0, 0))
                stage.domain.set_quota(
                    provider, in_use=in_use, in_flight=in_flight, limit=quotas.get(provider)
                )

        stage.sample(sample_quota)
        return SubmitterDeps(
            providers=providers,
            ledger=ledger,
            publisher=stage.publisher,
            topics=topics,
            default_provider=settings.default_provider,
            quota=lambda provider: quotas.get(provider, 1),
            fetch_image=resources.image_fetcher(),
            quota_wait_s=settings.quota_wait_s,
            allow_private_urls=settings.allow_private_urls,
            prices=settings.price_table,
            budgets=settings.all_budgets,
            budget_ledger=BudgetLedger(ledger.engine),
            budget_wait_s=settings.budget_wait_s,
        )

    # A consumer batch at a time, its requests side by side (vidpipe.bus.batches).
    @stage.keyed_batches(
        {
            topics.generation_requested: GenerationRequested,
            topics.due("submitter"): GenerationRequested,
        }
    )
    async def on_requested(event: GenerationRequested, deps: Deps[SubmitterDeps]) -> None:
        await handle_generation_requested(event, deps)

    @stage.keyed_batches(
        {topics.job_succeeded: JobSucceeded, topics.job_failed: JobFailed},
        group_id=settings.group_id("submitter.slots"),
    )
    async def on_finished(event: JobSucceeded | JobFailed, deps: Deps[SubmitterDeps]) -> None:
        await handle_job_finished(event.request_id, deps, event)

    # Its own group, so a cancel is not queued behind a backlog of requests.
    @stage.keyed_batches(
        {topics.cancel_requested: CancelRequested},
        group_id=settings.group_id("submitter.cancel"),
    )
    async def on_cancel(event: CancelRequested, deps: Deps[SubmitterDeps]) -> None:
        await handle_cancel_requested(event, deps)

    return stage
