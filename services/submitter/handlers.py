"""Submitter: turns a GenerationRequested into exactly one provider job.

Reads:   {prefix}generation.requested   GenerationRequested (from upstream)
         {prefix}submitter.due          GenerationRequested (released by this stage's timers)
         {prefix}job.succeeded, {prefix}job.failed   (to free the provider's quota slot)
Writes:  {prefix}job.submitted          JobSubmitted
         {prefix}job.failed             JobFailed (stage="submit")
         {prefix}timers.submitter       Timer (a request waiting for a quota slot or a 429)

Rules:
- One request id, one provider job: the ledger remembers it, and a resend or redelivery only
  re-announces the job it already has. The request id is also sent as Idempotency-Key.
- The provider's concurrent-job quota (Azure's default: 2) is respected: an over-quota request
  waits on a durable timer and comes back; it is never dropped.
- Provider errors: retryable ones (429, 5xx) wait on a timer; terminal ones end in JobFailed.
  Which is which, and how long to wait, is decided by `vidpipe.policy.submission`; the handler
  does the ledger, the timer and the events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import structlog

from schemas.events import (
    GenerationRequested,
    JobFailed,
    JobSubmitted,
    RequestSnapshot,
    clip_message,
    derive_event_id,
    utcnow,
)
from schemas.topics import Topics
from vidpipe.bus import Publisher
from vidpipe.db.ledger import Ledger
from vidpipe.errors import VidpipeError
from vidpipe.policy.submission import (
    Reject,
    Wait,
    after_submit_error,
    quota_full,
    unknown_provider,
)
from vidpipe.providers.base import InputImage, ProviderClient, VideoSpec

__all__ = ["SubmitterDeps", "handle_generation_requested", "handle_job_finished"]

log = structlog.get_logger("vidpipe.submitter")

FetchImage = Callable[[str], Awaitable[InputImage]]


@dataclass
class SubmitterDeps:
    providers: Mapping[str, ProviderClient]
    ledger: Ledger
    publisher: Publisher
    topics: Topics
    default_provider: str
    quota: Callable[[str], int]
    fetch_image: FetchImage
    quota_wait_s: float = 5.0
    clock: Callable[[], datetime] = utcnow


async def handle_generation_requested(req: GenerationRequested, deps: SubmitterDeps) -> None:
    logger = log.bind(request_id=req.request_id)
    provider_name = req.provider or deps.default_provider

    known = await deps.ledger.get(req.request_id)
    if known is not None and known.provider_job_id is not None:
        # Already accepted: announce the same job again (same event id), start nothing new.
        logger.info("duplicate_request", provider_job_id=known.provider_job_id)
        await deps.publisher.publish(
            _submitted(
                req,
                known.provider,
                known.provider_job_id,
                known.endpoint_host,
                known.model,
                deps.clock(),
            )
        )
        return
    if known is not None and known.state == "done":
        logger.info("duplicate_request_already_finished")
        return

    client = deps.providers.get(provider_name)
    if client is None:
        await _fail(deps, req, provider_name, unknown_provider(provider_name, deps.providers))
        return

    if not await deps.ledger.try_acquire(req.request_id, provider_name, deps.quota(provider_name)):
        wait = quota_full(deps.quota_wait_s)
        logger.info("quota_full_waiting", provider=provider_name, wait_s=wait.delay_s)
        await _wait(deps, req, wait)
        return

    try:
        image = await deps.fetch_image(str(req.input_image_url)) if req.input_image_url else None
        spec = VideoSpec(
            prompt=req.prompt,
            width=req.width,
            height=req.height,
            seconds=req.seconds,
            variants=req.variants,
            model=req.model,
            image=image,
        )
        job = await client.create_job(spec, idempotency_key=req.request_id)
    except VidpipeError as exc:
        decision = after_submit_error(exc, deps.quota_wait_s)
        if isinstance(decision, Wait):
            # Give the slot back while we wait: the provider may be refusing because it is full.
            await deps.ledger.forget(req.request_id)
            logger.warning("provider_busy_waiting", code=decision.code, wait_s=decision.delay_s)
            await _wait(deps, req, decision)
        else:
            # Announce the failure before freeing the slot: if we die in between, the redelivered
            # request finds its claim still open and fails again with the same event id.
            await _fail(deps, req, provider_name, decision)
            await deps.ledger.release(req.request_id)
        return

    await deps.ledger.mark_in_flight(
        req.request_id,
        provider_job_id=job.job_id,
        endpoint_host=client.endpoint_host,
        model=job.model or req.model,
    )
    logger.info("job_submitted", provider=provider_name, provider_job_id=job.job_id)
    await deps.publisher.publish(
        _submitted(
            req,
            provider_name,
            job.job_id,
            client.endpoint_host,
            job.model or req.model,
            deps.clock(),
        )
    )


async def handle_job_finished(request_id: str, deps: SubmitterDeps) -> None:
    """A job reached a terminal state: free its provider slot (idempotent)."""
    if await deps.ledger.release(request_id):
        log.info("slot_released", request_id=request_id)


def _submitted(
    req: GenerationRequested,
    provider: str,
    job_id: str,
    host: str | None,
    model: str | None,
    now: datetime,
) -> JobSubmitted:
    return JobSubmitted(
        event_id=derive_event_id(req.request_id, "JobSubmitted", job_id),
        occurred_at=now,
        request_id=req.request_id,
        causation_id=req.event_id,
        provider=provider,
        provider_job_id=job_id,
        endpoint_host=host,
        model=model,
        request=RequestSnapshot.of(req),
    )


async def _wait(deps: SubmitterDeps, req: GenerationRequested, wait: Wait) -> None:
    await deps.publisher.schedule(
        delay_s=wait.delay_s,
        target_topic=deps.topics.due("submitter"),
        key=req.request_id,
        payload=req.model_dump(mode="json"),
    )


async def _fail(
    deps: SubmitterDeps, req: GenerationRequested, provider: str, reject: Reject
) -> None:
    log.warning(
        "submit_failed",
        request_id=req.request_id,
        reason_code=reject.reason_code,
        message=reject.message,
    )
    await deps.publisher.publish(
        JobFailed(
            event_id=derive_event_id(req.request_id, "JobFailed", "submit"),
            occurred_at=deps.clock(),
            request_id=req.request_id,
            causation_id=req.event_id,
            provider=provider,
            stage="submit",
            reason_code=reject.reason_code,
            message=clip_message(reject.message),
        )
    )
