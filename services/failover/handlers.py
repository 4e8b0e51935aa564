"""Failover: resubmits a request whose video cannot be had to the next provider of its chain.

Reads:   {prefix}download.unavailable   DownloadUnavailable
         {prefix}download.gaveup        DownloadGaveUp (the asset expired, or retries ran out)
         {prefix}job.failed             JobFailed whose cause is the provider's (an outage, a
                                        quota exhausted for the day: `worth_failing_over`)
Writes:  {prefix}generation.requested   GenerationRequested for a child request, with
                                        `parent_request_id` (the lineage's first request),
                                        `failover_path` (providers already used) and the provider

Which of the two download triggers a request's failover acts on is
`vidpipe.policy.fallbacks.failover_acts`: `DownloadGaveUp` with VIDPIPE_FAILOVER_WHEN=after_retry
when the policy retries, else `DownloadUnavailable`.

The chain (`vidpipe.policy.failover`): the request's `failover_chain`, else
VIDPIPE_FAILOVER_CHAIN, else VIDPIPE_FAILOVER_PROVIDER, else any other configured provider. The
next provider is the chain's first that the lineage has not used, that is configured, and that
can serve the request (`vidpipe.policy.request_mapping`): at most once per provider per lineage.
A child keeps `failover` in its fallbacks only while the chain has a provider left after it, so
the last child ends like any request without failover. The child's request id is derived from
the lineage's first request and the hop, so a redelivered trigger re-publishes the same request,
which the submitter recognises and does not start twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from schemas.events import (
    DownloadGaveUp,
    DownloadUnavailable,
    FallbackName,
    GenerationRequested,
    JobFailed,
    RequestSnapshot,
    derive_event_id,
    utcnow,
)
from vidpipe.bus import Publisher
from vidpipe.policy.failover import (
    chain_for,
    child_request_id,
    next_provider,
    worth_failing_over,
)
from vidpipe.policy.fallbacks import FailoverTrigger, failover_acts, policy
from vidpipe.policy.request_mapping import Mapped, map_request

__all__ = ["FailoverDeps", "child_request_id", "handle_job_failed", "handle_trigger"]

log = structlog.get_logger("vidpipe.failover")


@dataclass
class FailoverDeps:
    publisher: Publisher
    default_fallbacks: list[FallbackName]
    #: Providers that can take a job, in order of preference.
    available_providers: Sequence[str]
    #: The configured alternate (a chain of one); None means "any other available provider".
    alternate: str | None = None
    when: str = "after_retry"
    #: VIDPIPE_FAILOVER_CHAIN, parsed; wins over `alternate`.
    chain: Sequence[str] = field(default_factory=tuple)
    clock: Callable[[], datetime] = utcnow


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
    await _fail_over(event.request_id, event.event_id, event.provider, event.request, deps)


async def handle_job_failed(event: JobFailed, deps: FailoverDeps) -> None:
    """A terminal provider failure another provider may not have: fail over at once."""
    if not worth_failing_over(event.reason_code):
        return
    logger = log.bind(request_id=event.request_id, trigger=event.event_type)
    if "failover" not in policy(event.request, deps.default_fallbacks):
        logger.info("policy_excludes", fallback="failover", reason_code=event.reason_code)
        return
    if event.provider is None:
        logger.warning("failover_impossible", reason="the failure names no provider")
        return
    await _fail_over(event.request_id, event.event_id, event.provider, event.request, deps)


async def _fail_over(
    request_id: str,
    cause: uuid.UUID,
    current: str,
    request: RequestSnapshot | None,
    deps: FailoverDeps,
) -> None:
    logger = log.bind(request_id=request_id)
    if request is None:
        logger.warning("failover_impossible", reason="the event carries no request to resubmit")
        return
    if request.parent_request_id is not None and not request.failover_path:
        # A child made before chains (or by upstream) says nothing of its lineage's providers.
        logger.info("failover_skipped", reason="a child without a failover path: once per lineage")
        return
    fallbacks = policy(request, deps.default_fallbacks)
    used = [*request.failover_path, current]
    chain = _chain(request, current, deps)
    candidates = set(deps.available_providers)
    provider = next_provider(chain, used, candidates, lambda name: _serves(name, request))
    if provider is None:
        logger.warning(
            "failover_impossible",
            reason="no provider of the chain is left that is configured and can serve it",
            current=current,
            chain=chain,
            used=used,
        )
        return
    # Every child names the lineage's first request, whose record shows the whole chain.
    root = request.parent_request_id or request_id
    child = child_request_id(root, hop=len(used))
    further = next_provider(chain, [*used, provider], candidates, lambda n: _serves(n, request))
    logger.info("failing_over", child_request_id=child, provider=provider, path=used)
    await deps.publisher.publish(
        GenerationRequested(
            event_id=derive_event_id(child, "GenerationRequested"),
            occurred_at=deps.clock(),
            request_id=child,
            causation_id=cause,
            prompt=request.prompt,
            input_image_url=request.input_image_url,
            seconds=request.seconds,
            size=request.size,
            variants=request.variants,
            provider=provider,
            model=None,  # a deployment name of one provider means nothing to another
            # The last provider of the chain ends like a request without failover.
            fallbacks=[f for f in fallbacks if f != "failover" or further is not None],
            callback_url=request.callback_url,
            metadata=request.metadata,
            parent_request_id=root,
            failover_chain=list(chain),
            failover_path=used,
        )
    )


def _chain(request: RequestSnapshot, current: str, deps: FailoverDeps) -> list[str]:
    available = [p for p in deps.available_providers if p != current]
    return chain_for(request.failover_chain, deps.chain, deps.alternate, available)


def _serves(provider: str, request: RequestSnapshot) -> bool:
    width, _, height = request.size.partition("x")
    mapped = map_request(
        provider,
        model=None,
        seconds=request.seconds,
        width=int(width),
        height=int(height),
        variants=request.variants,
        has_image=request.input_image_url is not None,
    )
    return isinstance(mapped, Mapped)
