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
- No paid job twice: the intent is written before the create. A redelivery that finds an open
  intent (a crash before the ledger write, a lost answer) lists the provider's jobs since then
  and adopts the matching one before creating anything (`vidpipe.policy.submission.match_job`).
- A callback written as `localhost` or a private/loopback/metadata address fails the request
  before anything is paid for (`unsafe_callback_url`).
- Every failure path ends the claim: an input image that cannot be fetched, whatever was raised,
  ends in JobFailed and frees the slot.
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
    Reconcile,
    Reject,
    Wait,
    after_fetch_error,
    after_submit_error,
    after_unexpected_error,
    match_job,
    next_step,
    quota_full,
    unknown_provider,
    unsafe_callback,
)
from vidpipe.providers.base import InputImage, ProviderClient, ProviderJob, VideoSpec

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
    #: Development only: private callback addresses pass (the notifier's guard has the same).
    allow_private_urls: bool = False
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

    refused = unsafe_callback(
        str(req.callback_url) if req.callback_url else None, allow_private=deps.allow_private_urls
    )
    if refused is not None:
        await _fail(deps, req, provider_name, refused)
        return

    client = deps.providers.get(provider_name)
    if client is None:
        await _fail(deps, req, provider_name, unknown_provider(provider_name, deps.providers))
        return

    claim = await deps.ledger.acquire(
        req.request_id, provider_name, deps.quota(provider_name), known=known
    )
    if claim is None:
        wait = quota_full(deps.quota_wait_s)
        logger.info("quota_full_waiting", provider=provider_name, wait_s=wait.delay_s)
        await _wait(deps, req, wait)
        return

    step = next_step(claim.intent_at)
    if isinstance(step, Reconcile):
        # An earlier create's outcome is unknown (lost answer, crash before the ledger write):
        # the provider may already run our job. Look before paying again.
        try:
            adopted = await _reconcile(deps, req, client, step.since)
        except VidpipeError as exc:
            await _after_error(deps, req, provider_name, exc)
            return
        if adopted is not None:
            logger.info("lost_create_adopted", provider_job_id=adopted.job_id)
            await _accepted(deps, req, provider_name, client, adopted)
            return

    try:
        image = await deps.fetch_image(str(req.input_image_url)) if req.input_image_url else None
    except Exception as exc:  # whatever the URL served, the request ends here
        # Fail first, then free the slot: a crash in between redelivers into the same JobFailed.
        await _fail(deps, req, provider_name, after_fetch_error(exc))
        await deps.ledger.release(req.request_id)
        return
    spec = VideoSpec(
        prompt=req.prompt,
        width=req.width,
        height=req.height,
        seconds=req.seconds,
        variants=req.variants,
        model=req.model,
        image=image,
    )
    # Written before the create: a crash or a lost answer from here on is reconciled, not resent.
    await deps.ledger.record_intent(req.request_id)
    try:
        job = await client.create_job(spec, idempotency_key=req.request_id)
    except VidpipeError as exc:
        await _after_error(deps, req, provider_name, exc)
        return
    except Exception as exc:  # an unknown failure must not keep the slot
        await _fail(deps, req, provider_name, after_unexpected_error(exc))
        await deps.ledger.release(req.request_id)
        return
    await _accepted(deps, req, provider_name, client, job)


async def _reconcile(
    deps: SubmitterDeps,
    req: GenerationRequested,
    client: ProviderClient,
    since: datetime,
) -> ProviderJob | None:
    listed = await client.list_jobs(since)
    taken = await deps.ledger.taken_jobs(client.name, (job.job_id for job in listed))
    return match_job(
        listed,
        prompt=req.prompt,
        width=req.width,
        height=req.height,
        seconds=req.seconds,
        since=since,
        taken=taken,
    )


async def _accepted(
    deps: SubmitterDeps,
    req: GenerationRequested,
    provider_name: str,
    client: ProviderClient,
    job: ProviderJob,
) -> None:
    await deps.ledger.mark_in_flight(
        req.request_id,
        provider_job_id=job.job_id,
        endpoint_host=client.endpoint_host,
        model=job.model or req.model,
    )
    log.info(
        "job_submitted",
        request_id=req.request_id,
        provider=provider_name,
        provider_job_id=job.job_id,
    )
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


async def _after_error(
    deps: SubmitterDeps, req: GenerationRequested, provider_name: str, exc: VidpipeError
) -> None:
    decision = after_submit_error(exc, deps.quota_wait_s)
    if isinstance(decision, Wait):
        if not decision.job_may_exist:
            # The provider said no (429): give the slot back while we wait, it may be full.
            await deps.ledger.forget(req.request_id)
        # Otherwise the claim and its intent stay: the next attempt reconciles first.
        log.warning(
            "provider_busy_waiting",
            request_id=req.request_id,
            code=decision.code,
            wait_s=decision.delay_s,
            job_may_exist=decision.job_may_exist,
        )
        await _wait(deps, req, decision)
        return
    # Announce the failure before freeing the slot: if we die in between, the redelivered
    # request finds its claim still open and fails again with the same event id.
    await _fail(deps, req, provider_name, decision)
    await deps.ledger.release(req.request_id)


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
