"""Failover wiring: download.unavailable / download.gaveup -> generation.requested (a child)."""

from __future__ import annotations

from schemas.events import DownloadGaveUp, DownloadUnavailable, GenerationRequested
from services.failover.handlers import FailoverDeps, handle_trigger
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
        )

    # Both triggers, whatever the timing: which one a request's failover acts on depends on its
    # policy too (`vidpipe.policy.fallbacks.failover_acts`), and the handler asks.
    @stage.subscriber(topics.download_unavailable)
    async def on_unavailable(event: DownloadUnavailable, deps: Deps[FailoverDeps]) -> None:
        await handle_trigger(event, deps)

    @stage.subscriber(topics.download_gaveup)
    async def on_gave_up(event: DownloadGaveUp, deps: Deps[FailoverDeps]) -> None:
        await handle_trigger(event, deps)

    return stage
