"""Notifier wiring: download.unavailable -> user.notified (+ a signed webhook to callback_url)."""

from __future__ import annotations

import structlog

from schemas.events import DownloadUnavailable, UserNotified
from services.notifier.handlers import NotifierDeps, handle_download_unavailable
from vidpipe.net.webhooks import sender_from_settings
from vidpipe.settings import Settings
from vidpipe.stage import Deps, Resources, Stage

__all__ = ["create_stage"]

log = structlog.get_logger("vidpipe.notifier")

# Kafka's default max.poll.interval.ms; raised when webhook retries could outlast it.
_DEFAULT_POLL_INTERVAL_MS = 300_000


def create_stage(settings: Settings, *, bootstrap_servers: str | None = None) -> Stage:
    stage = Stage(
        "notifier", settings, bootstrap_servers=bootstrap_servers, publishes=(UserNotified,)
    )
    # Built here, not in the lifespan: a malformed secret or CA file fails before connecting,
    # and the sender's retry budget sizes the subscriber below. The lifespan closes it.
    webhooks = sender_from_settings(settings)
    if webhooks is None:
        log.warning(
            "webhook_secret_missing",
            detail="VIDPIPE_WEBHOOK_SECRET is not set: callback URLs will not be called",
        )

    @stage.dependencies
    async def build_deps(resources: Resources) -> NotifierDeps:
        return NotifierDeps(
            publisher=stage.publisher,
            webhooks=resources.adopt(webhooks, "webhook sender") if webhooks else None,
            default_fallbacks=settings.fallback_default,
        )

    worst_case_ms = int(webhooks.worst_case_s * 1000) if webhooks else 0
    # A slow receiver retried with backoff holds the handler; give the group room before it
    # evicts this consumer (the retries themselves are bounded in count and total wait).
    max_poll_interval_ms = max(_DEFAULT_POLL_INTERVAL_MS, worst_case_ms + 60_000)

    @stage.subscriber(stage.topics.download_unavailable, max_poll_interval_ms=max_poll_interval_ms)
    async def on_unavailable(event: DownloadUnavailable, deps: Deps[NotifierDeps]) -> None:
        await handle_download_unavailable(event, deps)

    return stage
