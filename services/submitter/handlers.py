"""Submitter: turns a GenerationRequested into exactly one provider job.

Reads:   {prefix}generation.requested   GenerationRequested (from upstream)
         {prefix}submitter.due          GenerationRequested (released by this stage's timers)
         {prefix}job.succeeded, {prefix}job.failed   (to free the provider's quota slot)
         {prefix}cancel.requested       CancelRequested (in its own group: submitter.cancel)
Writes:  {prefix}job.submitted          JobSubmitted
         {prefix}job.failed             JobFailed (stage="submit")
         {prefix}timers.submitter       Timer (a request waiting for a quota slot or a 429)
         {prefix}job.cancelled          JobCancelled (a cancel that took the request's claim)

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
- Cancel: the ledger's claim goes to the cancel or to the job's end, never both
  (`Ledger.cancel`); a request cancelled before it arrives is never submitted, a job in flight
  is cancelled at the provider, a finished one stays (`vidpipe.policy.cancel`).
- Budgets (docs/costs.md): once the slot is held, the job's estimated cost is reserved in every
  budget bucket the request is charged to (`vidpipe.db.budgets`, atomic across replicas); over
  a budget the request fails `budget_exceeded` (or waits, if that budget says `wait`) and is
  never submitted. The job's end settles the reservation to its final cost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from schemas.events import (
    CancelRequested,
    GenerationRequested,
    JobFailed,
    JobSubmitted,
    JobSucceeded,
    RequestSnapshot,
    SentRequest,
    clip_message,
    derive_event_id,
    utcnow,
)
from schemas.topics import Topics
from vidpipe.bus import Publisher
from vidpipe.db.budgets import BudgetLedger
from vidpipe.db.ledger import Ledger
from vidpipe.errors import ProviderError, VidpipeError
from vidpipe.policy.budgets import Budget, charges_for, refusal, wait_delay
from vidpipe.policy.cancel import cancelled_event, plan_cancel
from vidpipe.policy.prices import (
    DEFAULT_PRICES,
    Estimate,
    PriceTable,
    estimate_cost,
    final_cost_micros,
    micros_to_usd,
)
from vidpipe.policy.request_mapping import Mapped, Unsupported, map_request
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

__all__ = [
    "SubmitterDeps",
    "handle_cancel_requested",
    "handle_generation_requested",
    "handle_job_finished",
]

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
    #: Costs and budgets (docs/costs.md); no budget ledger: no budgets are checked.
    prices: PriceTable = DEFAULT_PRICES
    budgets: Sequence[Budget] = field(default_factory=tuple)
    budget_ledger: BudgetLedger | None = None
    budget_wait_s: float = 60.0


async def handle_generation_requested(req: GenerationRequested, deps: SubmitterDeps) -> None:
    logger = log.bind(request_id=req.request_id)
    provider_name = req.provider or deps.default_provider

    known = await deps.ledger.get(req.request_id)
    if known is not None and known.state == "cancelled":
        # Cancelled before it came (or while it waited for a slot): never submitted.
        logger.info("cancelled_request_not_submitted")
        if known.intent_at is not None and known.provider_job_id is None:
            # Cancelled while a create's outcome was unknown: the provider may run a job for
            # it. Look, as a resubmission would, and cancel what is found.
            await _cancel_lost_create(deps, req, known.provider, known.intent_at)
        return
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
                _estimate(deps, req, known.provider, known.model),
                _mapping(deps, req, known.provider),
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
    # What the provider accepts is decided before the slot, the image and the create.
    mapped = _mapping(deps, req, provider_name)
    if isinstance(mapped, Unsupported):
        await _fail(deps, req, provider_name, Reject(mapped.reason_code, mapped.message))
        return
    if mapped.changes:
        logger.info("request_mapped", provider=provider_name, changes=list(mapped.changes))

    claim = await deps.ledger.acquire(
        req.request_id, provider_name, deps.quota(provider_name), known=known
    )
    if claim is None:
        wait = quota_full(deps.quota_wait_s)
        logger.info("quota_full_waiting", provider=provider_name, wait_s=wait.delay_s)
        await _wait(deps, req, wait)
        return
    if not await _within_budget(deps, req, provider_name):
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
        width=mapped.width,
        height=mapped.height,
        seconds=mapped.seconds,
        variants=mapped.variants,
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
    # The provider echoes what it was sent: the mapped values.
    sent = _mapping(deps, req, client.name)
    width, height, seconds = (
        (sent.width, sent.height, sent.seconds)
        if isinstance(sent, Mapped)
        else (req.width, req.height, req.seconds)
    )
    return match_job(
        listed,
        prompt=req.prompt,
        width=width,
        height=height,
        seconds=seconds,
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
    if not await deps.ledger.mark_in_flight(
        req.request_id,
        provider_job_id=job.job_id,
        endpoint_host=client.endpoint_host,
        model=job.model or req.model,
    ):
        # A cancel took the claim while the create was under way (it announced JobCancelled):
        # the job it made is cancelled on arrival, and never announced.
        stopped = await _cancel_at_provider(client, job.job_id, req.request_id)
        log.info(
            "job_cancelled_on_arrival",
            request_id=req.request_id,
            provider_job_id=job.job_id,
            provider_cancelled=stopped,
        )
        return
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
            _estimate(deps, req, provider_name, job.model or req.model),
            _mapping(deps, req, provider_name),
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


async def handle_cancel_requested(cancel: CancelRequested, deps: SubmitterDeps) -> None:
    """Take the request's claim for the cancel, stop its job at the provider, announce it.

    Idempotent: a redelivered or repeated cancel finds the claim already cancelled, asks the
    provider again (its cancel is idempotent) and announces the same event (same event id)."""
    claim = await deps.ledger.cancel(cancel.request_id)
    plan = plan_cancel(claim.previous_state, claim.provider_job_id)
    logger = log.bind(request_id=cancel.request_id, verdict=plan.verdict)
    if not plan.announce:
        logger.info("cancel_too_late", state=claim.previous_state)
        return
    stopped = False
    client = deps.providers.get(claim.provider) if claim.provider else None
    if plan.cancel_job is not None and client is not None:
        stopped = await _cancel_at_provider(client, plan.cancel_job, cancel.request_id)
    logger.info("request_cancelled", provider_job_id=plan.cancel_job, provider_cancelled=stopped)
    await deps.publisher.publish(
        cancelled_event(
            cancel, plan, provider=claim.provider, provider_cancelled=stopped, now=deps.clock()
        )
    )
    if deps.budget_ledger is not None:
        # A job the provider had counts at its estimate (what it bills a cancel is unknown);
        # one never created costs nothing (docs/costs.md).
        reserved = await deps.budget_ledger.reserved(cancel.request_id)
        cost = 0 if plan.cancel_job is None else reserved
        if await deps.budget_ledger.settle(cancel.request_id, cost):
            logger.info("budget_settled", cost_usd=micros_to_usd(cost))


async def _cancel_lost_create(
    deps: SubmitterDeps, req: GenerationRequested, provider_name: str, since: datetime
) -> None:
    client = deps.providers.get(provider_name)
    if client is None:
        return
    try:
        found = await _reconcile(deps, req, client, since)
    except VidpipeError as exc:  # a provider that lists nothing (fal): nothing more to do
        log.warning("lost_create_not_reconciled", request_id=req.request_id, error=str(exc))
        return
    if found is None:
        return
    # Noted on the cancelled row (nobody else adopts it), then stopped.
    await deps.ledger.mark_in_flight(
        req.request_id,
        provider_job_id=found.job_id,
        endpoint_host=client.endpoint_host,
        model=found.model or req.model,
    )
    stopped = await _cancel_at_provider(client, found.job_id, req.request_id)
    log.info(
        "lost_create_cancelled",
        request_id=req.request_id,
        provider_job_id=found.job_id,
        provider_cancelled=stopped,
    )


async def _cancel_at_provider(client: ProviderClient, job_id: str, request_id: str) -> bool:
    """The provider's answer to a cancel; an error is logged, not raised: the request ends
    cancelled whatever the provider says, and its result is discarded."""
    try:
        return await client.cancel_job(job_id)
    except ProviderError as exc:
        log.warning(
            "provider_cancel_failed",
            request_id=request_id,
            provider_job_id=job_id,
            code=exc.code,
            error=str(exc),
        )
        return False


async def handle_job_finished(
    request_id: str, deps: SubmitterDeps, final: JobSucceeded | JobFailed | None = None
) -> None:
    """A job reached a terminal state: free its provider slot and settle its budget
    reservations to what it cost (both idempotent)."""
    if await deps.ledger.release(request_id):
        log.info("slot_released", request_id=request_id)
    if deps.budget_ledger is not None and final is not None:
        reserved = await deps.budget_ledger.reserved(request_id)
        cost = final_cost_micros(
            reported_usd=final.cost_usd,
            reserved_micros=reserved,
            succeeded=isinstance(final, JobSucceeded),
            stage=final.stage if isinstance(final, JobFailed) else None,
        )
        if await deps.budget_ledger.settle(request_id, cost):
            log.info("budget_settled", request_id=request_id, cost_usd=micros_to_usd(cost))


def _estimate(
    deps: SubmitterDeps, req: GenerationRequested, provider: str, model: str | None
) -> Estimate:
    return estimate_cost(
        deps.prices,
        provider,
        model,
        seconds=req.seconds,
        width=req.width,
        height=req.height,
        variants=req.variants,
    )


async def _within_budget(deps: SubmitterDeps, req: GenerationRequested, provider: str) -> bool:
    """Reserve the job's estimated cost in its budgets; False when a budget refused it, and the
    request failed (`budget_exceeded`) or waits, its slot given back either way."""
    if deps.budget_ledger is None or not deps.budgets:
        return True
    now = deps.clock()
    estimate = _estimate(deps, req, provider, req.model)
    charges = charges_for(deps.budgets, req.metadata, now)
    refused = await deps.budget_ledger.reserve(req.request_id, charges, estimate.micros)
    if refused is None:
        return True
    message = refusal(refused.charge, refused.spent_micros, estimate.micros)
    if refused.charge.budget.on_exceed == "wait":
        delay = wait_delay(refused.charge, now, retry_s=deps.budget_wait_s)
        log.info("over_budget_waiting", request_id=req.request_id, detail=message, wait_s=delay)
        await deps.ledger.forget(req.request_id)
        await _wait(deps, req, Wait(delay, "over_budget"))
        return False
    # Announce first, then free the slot: a crash in between redelivers into the same JobFailed.
    await _fail(deps, req, provider, Reject("budget_exceeded", message))
    await deps.ledger.release(req.request_id)
    return False


def _submitted(
    req: GenerationRequested,
    provider: str,
    job_id: str,
    host: str | None,
    model: str | None,
    now: datetime,
    estimate: Estimate | None = None,
    sent: Mapped | Unsupported | None = None,
) -> JobSubmitted:
    return JobSubmitted(
        cost_usd=None if estimate is None else estimate.usd,
        price_version=None if estimate is None else estimate.price_version,
        event_id=derive_event_id(req.request_id, "JobSubmitted", job_id),
        occurred_at=now,
        request_id=req.request_id,
        causation_id=req.event_id,
        provider=provider,
        provider_job_id=job_id,
        endpoint_host=host,
        model=model,
        request=_snapshot(req, sent),
    )


def _mapping(deps: SubmitterDeps, req: GenerationRequested, provider: str) -> Mapped | Unsupported:
    """`req` mapped onto what `provider` accepts (its client's configured model when the request
    names none)."""
    client = deps.providers.get(provider)
    configured = getattr(client, "model", None)
    return map_request(
        provider,
        model=req.model or (configured if isinstance(configured, str) else None),
        seconds=req.seconds,
        width=req.width,
        height=req.height,
        variants=req.variants,
        has_image=req.input_image_url is not None,
    )


def _snapshot(req: GenerationRequested, sent: Mapped | Unsupported | None) -> RequestSnapshot:
    snapshot = RequestSnapshot.of(req)
    if not isinstance(sent, Mapped):
        return snapshot
    return snapshot.model_copy(
        update={
            "sent": SentRequest(
                seconds=sent.seconds,
                size=sent.size,
                variants=sent.variants,
                aspect_ratio=sent.aspect_ratio,
                changes=list(sent.changes),
                length_checked=sent.length_checked,
            )
        }
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
            # The failover stage resubmits it when the cause is the provider's (an outage).
            request=RequestSnapshot.of(req),
            # Never submitted, or refused by the provider: nothing billed.
            cost_usd=0.0,
            price_version=deps.prices.version,
        )
    )
