"""Poller: watches each provider job until it ends, on durable timers (never a long handler).

Reads:   {prefix}job.submitted   JobSubmitted  -> schedules the first status check
         {prefix}poller.due      PollDue       (released by this stage's timers) -> one check
         {prefix}poller.hinted   PollHinted    (a provider's webhook, via the gateway) -> one
                                               check now, announced only if the job has ended
Writes:  {prefix}job.progressed  JobProgressed (only when status or progress changed)
         {prefix}job.succeeded   JobSucceeded
         {prefix}job.failed      JobFailed (stage="poll")
         {prefix}timers.poller   Timer carrying the next PollDue

A cancelled request (the submitter's ledger says so) is checked no more: its due check ends
without a provider call, and an outcome seen as the cancel took the claim is dropped
(`Ledger.finish` decides which of the two came first), so nothing downstream runs for it.

A webhook is only a hint: its check asks the provider as any other does, announces the end the
provider reports (the very events the timed check would, so the later copy is dropped) and
schedules nothing, so a lost or forged webhook changes nothing (`decide_hinted_check`).

The handlers do the I/O (ask the provider, publish, schedule); what a check means is decided by
`vidpipe.policy.polling`, a pure function of the check, the provider's answer and the time.
Every event id is derived from the request and the step, so a check repeated after a crash emits
the very same events, and consumers drop the copies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from schemas.events import JobFailed, JobSubmitted, JobSucceeded, PollDue, PollHinted, utcnow
from schemas.topics import Topics
from vidpipe.bus import Publisher
from vidpipe.errors import ProviderError
from vidpipe.policy.polling import (
    CANCELLED,
    Cancelled,
    NotConfigured,
    ObservedJob,
    PollOutcome,
    PollSchedule,
    decide_check,
    decide_hinted_check,
    first_check,
    hinted_check,
)
from vidpipe.providers.base import ProviderClient

__all__ = [
    "JobGate",
    "PollerDeps",
    "handle_job_submitted",
    "handle_poll_due",
    "handle_poll_hinted",
]

log = structlog.get_logger("vidpipe.poller")


class JobGate(Protocol):
    """Whether a job is still wanted (the submitter's ledger, `vidpipe.db.ledger.Ledger`)."""

    async def is_cancelled(self, request_id: str) -> bool: ...

    async def finish(self, request_id: str) -> bool:
        """Close the job's claim as ended; False when a cancel took it first."""
        ...


@dataclass
class PollerDeps:
    providers: Mapping[str, ProviderClient]
    publisher: Publisher
    topics: Topics
    #: None: no cancels are honoured (unit tests and benchmarks without a database).
    gate: JobGate | None = None
    first_s: float = 1.0
    interval_s: float = 5.0
    max_interval_s: float = 60.0
    age_share: float = 0.1
    # Consecutive transient errors tolerated before the job is declared failed.
    max_transient_errors: int = 30
    clock: Callable[[], datetime] = utcnow

    @property
    def schedule(self) -> PollSchedule:
        return PollSchedule(
            first_s=self.first_s,
            interval_s=self.interval_s,
            max_interval_s=self.max_interval_s,
            age_share=self.age_share,
            max_transient_errors=self.max_transient_errors,
        )


async def handle_job_submitted(event: JobSubmitted, deps: PollerDeps) -> None:
    await _carry_out(first_check(event, deps.schedule, deps.clock()), deps)


async def _look(
    due: PollDue, deps: PollerDeps
) -> ObservedJob | ProviderError | NotConfigured | Cancelled:
    """Ask the provider how the job is (or say why it was not asked)."""
    client = deps.providers.get(due.provider)
    if deps.gate is not None and await deps.gate.is_cancelled(due.request_id):
        return CANCELLED  # no provider call for a job nobody wants
    if client is None:
        return NotConfigured()
    try:
        return await client.get_job(due.provider_job_id)
    except ProviderError as exc:
        return exc


async def handle_poll_hinted(hint: PollHinted, deps: PollerDeps) -> None:
    logger = log.bind(request_id=hint.request_id, provider_job_id=hint.provider_job_id)
    submitted = hint.submitted
    if (hint.provider, hint.provider_job_id, hint.request_id) != (
        submitted.provider,
        submitted.provider_job_id,
        submitted.request_id,
    ):
        logger.warning("hint_mismatched", provider=hint.provider)
        return
    due = hinted_check(hint, deps.clock())
    seen = await _look(due, deps)
    outcome = decide_hinted_check(due, seen, deps.schedule, deps.clock())
    if outcome.ended and deps.gate is not None and not await deps.gate.finish(due.request_id):
        return  # the cancel took the claim first: nothing to announce
    logger.info(
        "hinted_check", source=hint.source, hinted=hint.hinted_status, verdict=outcome.verdict
    )
    for event in outcome.events:
        await deps.publisher.publish(event)


async def handle_poll_due(due: PollDue, deps: PollerDeps) -> None:
    seen = await _look(due, deps)
    outcome = decide_check(due, seen, deps.schedule, deps.clock())
    if outcome.ended and deps.gate is not None and not await deps.gate.finish(due.request_id):
        # The cancel took the claim before this outcome did: it is not announced.
        outcome = decide_check(due, CANCELLED, deps.schedule, deps.clock())
    logger = log.bind(request_id=due.request_id, provider_job_id=due.provider_job_id)
    # One line per check at DEBUG: which replica checked which job (the scaling test reads it).
    logger.debug("job_checked", verdict=outcome.verdict)
    for event in outcome.events:
        if isinstance(event, JobSucceeded):
            logger.info("job_succeeded", generations=len(event.generation_ids))
        elif isinstance(event, JobFailed):
            logger.warning("job_failed", reason_code=event.reason_code)
    if outcome.verdict == "cancelled":
        logger.info("cancelled_job_not_checked")
    if outcome.verdict == "transient_error":
        logger.warning("poll_transient_error", code=outcome.reason_code, retry_in_s=outcome.delay_s)
    await _carry_out(outcome, deps)


async def _carry_out(outcome: PollOutcome, deps: PollerDeps) -> None:
    for event in outcome.events:
        await deps.publisher.publish(event)
    due = outcome.next_check
    if due is not None:
        await deps.publisher.schedule(
            delay_s=outcome.delay_s,
            target_topic=deps.topics.due("poller"),
            key=due.request_id,
            payload=due.model_dump(mode="json"),
            # The check's own (deterministic) id: a step run twice schedules one next check.
            timer_id=due.event_id,
        )
