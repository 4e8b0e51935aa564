"""Poller: watches each provider job until it ends, on durable timers (never a long handler).

Reads:   {prefix}job.submitted   JobSubmitted  -> schedules the first status check
         {prefix}poller.due      PollDue       (released by this stage's timers) -> one check
Writes:  {prefix}job.progressed  JobProgressed (only when status or progress changed)
         {prefix}job.succeeded   JobSucceeded
         {prefix}job.failed      JobFailed (stage="poll")
         {prefix}timers.poller   Timer carrying the next PollDue

Every event id is derived from the request and the step, so a check repeated after a crash emits
the very same events, and consumers drop the copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from schemas.events import (
    JobFailed,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    PollDue,
    derive_event_id,
)
from schemas.topics import Topics
from vidpipe.bus import Publisher
from vidpipe.errors import ProviderError, RetryableProviderError
from vidpipe.providers.base import ProviderClient, ProviderJob

__all__ = ["PollerDeps", "handle_job_submitted", "handle_poll_due"]

log = structlog.get_logger("vidpipe.poller")


@dataclass
class PollerDeps:
    providers: Mapping[str, ProviderClient]
    publisher: Publisher
    topics: Topics
    interval_s: float = 5.0
    max_interval_s: float = 60.0
    # Consecutive transient errors tolerated before the job is declared failed.
    max_transient_errors: int = 30


async def handle_job_submitted(event: JobSubmitted, deps: PollerDeps) -> None:
    first = PollDue(
        event_id=derive_event_id(event.request_id, "PollDue", event.provider_job_id, 0),
        request_id=event.request_id,
        causation_id=event.event_id,
        provider=event.provider,
        provider_job_id=event.provider_job_id,
        endpoint_host=event.endpoint_host,
        last_status=event.status,
        request=event.request,
    )
    await _schedule(deps, first, deps.interval_s)


async def handle_poll_due(due: PollDue, deps: PollerDeps) -> None:
    logger = log.bind(request_id=due.request_id, provider_job_id=due.provider_job_id)
    client = deps.providers.get(due.provider)
    if client is None:
        await _failed(
            deps,
            due,
            "unknown_provider",
            f"provider {due.provider!r} is not configured in this poller",
        )
        return
    try:
        job = await client.get_job(due.provider_job_id)
    except RetryableProviderError as exc:
        if due.transient_errors + 1 >= deps.max_transient_errors:
            await _failed(
                deps,
                due,
                exc.code,
                f"gave up after {due.transient_errors + 1} consecutive errors: {exc}",
            )
            return
        delay = exc.retry_after if exc.retry_after is not None else _backoff(deps, due.attempt)
        logger.warning("poll_transient_error", code=exc.code, retry_in_s=delay)
        await _schedule(deps, _next(due, transient_errors=due.transient_errors + 1), delay)
        return
    except ProviderError as exc:
        await _failed(deps, due, exc.code, str(exc))
        return

    if job.status == "succeeded":
        logger.info("job_succeeded", generations=len(job.generation_ids))
        await deps.publisher.publish(
            JobSucceeded(
                event_id=derive_event_id(due.request_id, "JobSucceeded", due.provider_job_id),
                request_id=due.request_id,
                causation_id=due.event_id,
                provider=due.provider,
                provider_job_id=due.provider_job_id,
                endpoint_host=due.endpoint_host,
                generation_ids=job.generation_ids or [job.job_id],
                expires_at=job.expires_at,
                request=due.request,
            )
        )
        return
    if job.status in ("failed", "cancelled"):
        await _failed(
            deps,
            due,
            job.failure_code or job.status,
            job.failure_message or f"the provider reports the job {job.raw_status}",
        )
        return

    if (job.raw_status, job.progress) != (due.last_status, due.last_progress):
        await deps.publisher.publish(_progressed(due, job))
    delay = job.poll_after_s if job.poll_after_s else _backoff(deps, due.attempt)
    await _schedule(
        deps,
        _next(due, last_status=job.raw_status, last_progress=job.progress, transient_errors=0),
        delay,
    )


def _backoff(deps: PollerDeps, attempt: int) -> float:
    # Start at the configured interval, stretch slowly for long jobs, never beyond the cap.
    return float(min(deps.max_interval_s, deps.interval_s * (1.15 ** max(0, attempt - 10))))


def _next(due: PollDue, **changes: object) -> PollDue:
    attempt = due.attempt + 1
    return due.model_copy(
        update={
            "attempt": attempt,
            "event_id": derive_event_id(due.request_id, "PollDue", due.provider_job_id, attempt),
            "causation_id": due.event_id,
            **changes,
        }
    )


def _progressed(due: PollDue, job: ProviderJob) -> JobProgressed:
    return JobProgressed(
        event_id=derive_event_id(
            due.request_id, "JobProgressed", due.provider_job_id, job.raw_status, job.progress
        ),
        request_id=due.request_id,
        causation_id=due.event_id,
        provider=due.provider,
        provider_job_id=due.provider_job_id,
        endpoint_host=due.endpoint_host,
        status=job.status,
        provider_status=job.raw_status,
        progress=job.progress,
    )


async def _schedule(deps: PollerDeps, due: PollDue, delay_s: float) -> None:
    await deps.publisher.schedule(
        delay_s=delay_s,
        target_topic=deps.topics.poller_due,
        key=due.request_id,
        payload=due.model_dump(mode="json"),
        # The check's own (deterministic) id: a step run twice schedules one next check.
        timer_id=due.event_id,
    )


async def _failed(deps: PollerDeps, due: PollDue, code: str, message: str) -> None:
    log.warning("job_failed", request_id=due.request_id, reason_code=code)
    await deps.publisher.publish(
        JobFailed(
            event_id=derive_event_id(due.request_id, "JobFailed", "poll", due.provider_job_id),
            request_id=due.request_id,
            causation_id=due.event_id,
            provider=due.provider,
            provider_job_id=due.provider_job_id,
            stage="poll",
            reason_code=code,
            message=message[:2000],
        )
    )
