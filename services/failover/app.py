"""Failover wiring: download.unavailable / download.gaveup / job.failed -> generation.requested
(a child)."""

from __future__ import annotations

from schemas.events import DownloadGaveUp, DownloadUnavailable, GenerationRequested, JobFailed
from services.failover.handlers import FailoverDeps, handle_job_failed, handle_trigger
from vidpipe.policy.failover import parse_chain
from vidpipe.providers import configured_providers
from vidpipe.settings import Settings
from vidpipe.stage import Deps, Resources, Stage

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap_servers: str | None = None) -> Stage:
    stage = Stage(
        "failover", settings, bootstrap_servers=bootstrap_servers, publishes=(GenerationRequested,)
    )
    topics = stage.topics

    @stage.dependencies
    async def build_deps(resources: Resources) -> FailoverDeps:
        return FailoverDeps(
            publisher=stage.publisher,
            default_fallbacks=settings.fallback_default,
            available_providers=configured_providers(),
            alternate=settings.failover_provider,
            when=settings.failover_when,
            chain=parse_chain(settings.failover_chain),
        )

    # Both triggers, whatever the timing: which one a request's failover acts on depends on its
    # policy too (`vidpipe.policy.fallbacks.failover_acts`), and the handler asks.
    @stage.subscriber(topics.download_unavailable)
    async def on_unavailable(event: DownloadUnavailable, deps: Deps[FailoverDeps]) -> None:
        await handle_trigger(event, deps)

    @stage.subscriber(topics.download_gaveup)
    async def on_gave_up(event: DownloadGaveUp, deps: Deps[FailoverDeps]) -> None:
        await handle_trigger(event, deps)

    # A provider's own terminal failure (an outage, a quota exhausted): `worth_failing_over`.
    @stage.subscriber(topics.job_failed)
    async def on_job_failed(event: JobFailed, deps: Deps[FailoverDeps]) -> None:
        await handle_job_failed(event, deps)

    return stage
