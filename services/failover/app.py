"""Failover wiring: download.unavailable / download.gaveup -> generation.requested (a child)."""

from __future__ import annotations

from schemas.events import DownloadGaveUp, DownloadUnavailable, GenerationRequested
from services.failover.handlers import FailoverDeps, handle_trigger
from vidpipe.settings import Settings
from vidpipe.stage import Stage

__all__ = ["create_stage"]


def create_stage(settings: Settings, *, bootstrap: str | None = None) -> Stage:
    stage = Stage("failover", settings, bootstrap=bootstrap)
    stage.publishes(GenerationRequested)
    topics = stage.topics
    deps = FailoverDeps(
        publisher=stage.publisher,
        default_fallbacks=settings.fallback_default,
        available_providers=settings.providers.configured(),
        alternate=settings.failover_provider,
        when=settings.failover_when,
    )
    trigger = (
        topics.download_unavailable
        if settings.failover_when == "immediate"
        else topics.download_gaveup
    )

    @stage.subscriber(trigger)
    async def on_trigger(event: DownloadUnavailable | DownloadGaveUp) -> None:
        await handle_trigger(event, deps)

    return stage
