"""Notifier: tells the requester their video was generated but cannot be downloaded yet.

Reads:   {prefix}download.unavailable   DownloadUnavailable (its own consumer group)
Writes:  {prefix}user.notified          UserNotified, channel="record": the user-facing message,
                                        in the request's language, for the recorder to store
                                        UserNotified, channel="webhook": the outcome of a signed
                                        POST to the request's callback_url (when it has one)

Rules:
- Runs only when the request's fallback policy includes "notify" (else logs `policy_excludes`).
- Language from metadata `lang` / `language` / `locale` ("fr", "fr-FR"), English by default:
  `vidpipe.policy.messages.resolve_language`, the resolver the placeholder's caption uses too.
- Webhooks are Standard-Webhooks signed (see vidpipe.net.webhooks), go only to public addresses,
  never follow redirects, and retry a bounded number of times. Their `webhook-id` is derived from
  the request and generation, so a redelivered event resends the same id and receivers dedupe.
- Idempotent: every UserNotified has a derived event_id, so redeliveries are recorded once.
- A failed delivery is an outcome to record, not an error: the handler returns normally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from schemas.events import (
    DownloadUnavailable,
    FallbackName,
    UserNotified,
    clip_message,
    derive_event_id,
    utcnow,
)
from vidpipe.bus import Publisher
from vidpipe.net.webhooks import WebhookSender, encode_body, webhook_id_for
from vidpipe.policy.fallbacks import applies
from vidpipe.policy.messages import Language, download_unavailable_message, resolve_language

__all__ = ["WEBHOOK_TYPE", "NotifierDeps", "build_notice", "handle_download_unavailable"]

log = structlog.get_logger("vidpipe.notifier")

WEBHOOK_TYPE = "video.download_unavailable"
NO_SECRET = "no webhook secret configured"  # noqa: S105 - a message, not a secret


@dataclass
class NotifierDeps:
    publisher: Publisher
    #: None when no webhook secret is configured: callbacks are then reported, not sent.
    webhooks: WebhookSender | None
    default_fallbacks: list[FallbackName]
    clock: Callable[[], datetime] = utcnow


def build_notice(
    event: DownloadUnavailable, *, webhook_id: str, message: str, language: str
) -> dict[str, Any]:
    """The webhook's JSON body. Built only from the event, so a redelivery sends the same bytes.

    Every text is cut to the event's own bound (the message to MESSAGE_MAX_CHARS, the language to
    16), so even a maximal event makes a notice of about 18 KB at worst (every character escaped
    as "\\u00XX"), under MAX_BODY_BYTES; `encode_body` enforces the bound whatever the payload.
    """
    return {
        "id": webhook_id,
        "type": WEBHOOK_TYPE,
        "created_at": int(event.occurred_at.timestamp()),
        "data": {
            "request_id": event.request_id,
            "provider": event.provider,
            "provider_job_id": event.provider_job_id,
            "generation_id": event.generation_id,
            "reason_code": event.reason_code,
            "message": clip_message(message),
            "language": language[:16],
            "expires_at": event.expires_at.isoformat() if event.expires_at else None,
        },
    }


async def handle_download_unavailable(event: DownloadUnavailable, deps: NotifierDeps) -> None:
    logger = log.bind(request_id=event.request_id, generation_id=event.generation_id)
    request = event.request
    if not applies("notify", request, deps.default_fallbacks):
        logger.info("policy_excludes", fallback="notify")
        return

    language = resolve_language(request.metadata if request else None)
    message = download_unavailable_message(
        language,
        job_id=event.provider_job_id,
        generation_id=event.generation_id,
        # Promise retries only when the redownloader will actually make them.
        will_retry=applies("retry", request, deps.default_fallbacks),
    )
    await deps.publisher.publish(
        UserNotified(
            event_id=derive_event_id(event.request_id, "UserNotified", "record"),
            occurred_at=deps.clock(),
            request_id=event.request_id,
            causation_id=event.event_id,
            channel="record",
            language=language,
            message=message,
            delivered=True,
        )
    )
    logger.info("user_notified", channel="record", language=language)

    if request is None or not request.callback_url:
        return
    webhook_id = webhook_id_for(event.request_id, WEBHOOK_TYPE, event.generation_id)

    if deps.webhooks is None:
        logger.warning(
            "webhook_not_sent",
            reason=NO_SECRET,
            hint="set VIDPIPE_WEBHOOK_SECRET to whsec_<base64> to deliver callbacks",
        )
        await deps.publisher.publish(
            _webhook_outcome(event, deps, language, webhook_id, NO_SECRET, delivered=False)
        )
        return

    body = encode_body(
        build_notice(event, webhook_id=webhook_id, message=message, language=language),
        max_bytes=deps.webhooks.max_body_bytes,
    )
    result = await deps.webhooks.deliver(request.callback_url, body, webhook_id=webhook_id)
    if result.delivered:
        outcome = f"delivered (HTTP {result.status}) after {result.attempts} attempt(s)"
        logger.info(
            "webhook_delivered",
            webhook_id=webhook_id,
            status=result.status,
            attempts=result.attempts,
        )
    else:
        outcome = f"not delivered: {result.error}"
        # The error names the host at most: callback paths and queries may hold tokens.
        logger.warning(
            "webhook_failed",
            webhook_id=webhook_id,
            status=result.status,
            attempts=result.attempts,
            error=result.error,
        )
    await deps.publisher.publish(
        _webhook_outcome(
            event,
            deps,
            language,
            webhook_id,
            outcome,
            delivered=result.delivered,
            status=result.status,
        )
    )


def _webhook_outcome(
    event: DownloadUnavailable,
    deps: NotifierDeps,
    language: Language,
    webhook_id: str,
    outcome: str,
    *,
    delivered: bool,
    status: int | None = None,
) -> UserNotified:
    """What became of the webhook, for the records: one per unavailable generation."""
    return UserNotified(
        event_id=derive_event_id(event.request_id, "UserNotified", "webhook", event.generation_id),
        occurred_at=deps.clock(),
        request_id=event.request_id,
        causation_id=event.event_id,
        channel="webhook",
        language=language,
        message=clip_message(outcome),
        webhook_id=webhook_id,
        webhook_status=status,
        delivered=delivered,
    )
