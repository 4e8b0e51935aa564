"""Failover: resubmits a request whose video cannot be had to another provider.

Reads:   {prefix}download.unavailable   DownloadUnavailable
         {prefix}download.gaveup        DownloadGaveUp
Writes:  {prefix}generation.requested   GenerationRequested for a child request, with
                                        `parent_request_id` set and the alternate provider

Which of the two triggers a request's failover acts on is `vidpipe.policy.fallbacks.failover_acts`:
`DownloadGaveUp` with VIDPIPE_FAILOVER_WHEN=after_retry when the policy retries, else
`DownloadUnavailable` (a policy without `retry` never gets a `DownloadGaveUp` to wait for).

At most once per lineage: a request that is itself a failover child is never failed over again,
and the child's request id is derived from the parent's, so a redelivered trigger re-publishes
the same request, which the submitter recognises and does not start twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from schemas.events import (
    DownloadGaveUp,
    DownloadUnavailable,
    FallbackName,
    GenerationRequested,
    derive_event_id,
    utcnow,
)
from vidpipe.bus import Publisher
from vidpipe.policy.fallbacks import FailoverTrigger, failover_acts, policy

__all__ = ["FailoverDeps", "child_request_id", "handle_trigger"]

log = structlog.get_logger("vidpipe.failover")


@dataclass
class FailoverDeps:
    publisher: Publisher
    default_fallbacks: list[FallbackName]
    #: Providers that can take a job, in order of preference.
    available_providers: Sequence[str]
    #: The configured alternate; None means "any other available provider".
    alternate: str | None = None
    when: str = "after_retry"
    clock: Callable[[], datetime] = utcnow


def child_request_id(parent: str) -> str:
    candidate = f"{parent}.failover"
    if len(candidate) <= 128:
        return candidate
    digest = hashlib.sha256(parent.encode()).hexdigest()[:12]
    return f"{parent[:100]}.failover-{digest}"


async def handle_trigger(event: DownloadUnavailable | DownloadGaveUp, deps: FailoverDeps) -> None:
    logger = log.bind(request_id=event.request_id, trigger=event.event_type)
    fallbacks = policy(event.request, deps.default_fallbacks)
    if "failover" not in fallbacks:
        logger.info("policy_excludes", fallback="failover")
        return
    trigger: FailoverTrigger = (
        "unavailable" if isinstance(event, DownloadUnavailable) else "gave_up"
    )
    if not failover_acts(fallbacks, deps.when, trigger):
        # The other trigger of this request is the one (see failover_acts).
        return
    request = event.request
    if request is None:
        logger.warning("failover_impossible", reason="the event carries no request to resubmit")
        return
    if request.parent_request_id is not None:
        logger.info("failover_skipped", reason="already a failover child: once per lineage")
        return
    alternate = _pick_alternate(event.provider, deps)
    if alternate is None:
        logger.warning(
            "failover_impossible", reason="no other provider is configured", current=event.provider
        )
        return
    child = child_request_id(event.request_id)
    logger.info("failing_over", child_request_id=child, provider=alternate)
    await deps.publisher.publish(
        GenerationRequested(
            event_id=derive_event_id(child, "GenerationRequested"),
            occurred_at=deps.clock(),
            request_id=child,
            causation_id=event.event_id,
            prompt=request.prompt,
            input_image_url=request.input_image_url,
            seconds=request.seconds,
            size=request.size,
            variants=request.variants,
            provider=alternate,
            model=None,  # a deployment name of one provider means nothing to another
            fallbacks=[f for f in fallbacks if f != "failover"],
            callback_url=request.callback_url,
            metadata=request.metadata,
            parent_request_id=event.request_id,
        )
    )


def _pick_alternate(current: str, deps: FailoverDeps) -> str | None:
    if deps.alternate is not None:
        return deps.alternate if deps.alternate != current else None
    return next((p for p in deps.available_providers if p != current), None)
