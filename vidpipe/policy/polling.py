"""The poller's decisions: what one status check announces, and when the next check is due.

Pure: `first_check(submitted, schedule, now)` and `decide_check(due, seen, schedule, now)` take
what happened (the job as the provider reported it, or the provider's error) and return a
`PollOutcome`; the handler publishes its events and schedules its next check. A provider's
webhook adds one check out of turn (`hinted_check`, `decide_hinted_check`): it may end the job
sooner, never otherwise. Every event id is
derived from the request and the step, so a check repeated after a crash decides the very same
events, and consumers drop the copies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, Protocol

from schemas.events import (
    Event,
    JobFailed,
    JobProgressed,
    JobState,
    JobSubmitted,
    JobSucceeded,
    PollDue,
    PollHinted,
    clip_message,
    derive_event_id,
)
from vidpipe.errors import ProviderError, RetryableProviderError

__all__ = [
    "CANCELLED",
    "Cancelled",
    "NotConfigured",
    "ObservedJob",
    "PollOutcome",
    "PollSchedule",
    "decide_check",
    "decide_hinted_check",
    "first_check",
    "hinted_check",
    "poll_delay",
]


@dataclass(frozen=True)
class PollSchedule:
    """When a job is checked (`poll_delay` says how), and how many provider errors in a row it
    survives."""

    #: The first check, this long after submission: a quick job or an early refusal is seen
    #: at once, not one full interval later.
    first_s: float = 1.0
    #: The shortest wait between two later checks when the provider gives no hint.
    interval_s: float = 5.0
    #: The longest wait between two checks (unless the provider itself asks for longer).
    max_interval_s: float = 60.0
    #: Each wait is at least this share of the job's age, so a job is seen done within about
    #: this share of its duration, and a long job costs few calls (their number grows with the
    #: logarithm of its duration, not linearly).
    age_share: float = 0.1
    #: Consecutive transient errors tolerated before the job is declared failed.
    max_transient_errors: int = 30


class ObservedJob(Protocol):
    """A provider job as a status check saw it (`vidpipe.providers.base.ProviderJob` is one)."""

    @property
    def job_id(self) -> str: ...
    @property
    def status(self) -> JobState: ...
    @property
    def raw_status(self) -> str: ...
    @property
    def progress(self) -> int | None: ...
    @property
    def generation_ids(self) -> list[str]: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def failure_code(self) -> str | None: ...
    @property
    def failure_message(self) -> str | None: ...
    @property
    def poll_after_s(self) -> float | None: ...


@dataclass(frozen=True)
class NotConfigured:
    """This process has no client for the check's provider: nothing was asked."""


@dataclass(frozen=True)
class Cancelled:
    """The request was cancelled (the ledger says so): the job is not asked about again."""


CANCELLED: Final = Cancelled()


@dataclass(frozen=True)
class PollOutcome:
    """What a check decided: publish `events` (in order), then, unless the job ended, schedule
    `next_check` in `delay_s` seconds."""

    verdict: Literal["scheduled", "waiting", "succeeded", "failed", "transient_error", "cancelled"]
    events: tuple[Event, ...] = ()
    next_check: PollDue | None = None
    delay_s: float = 0.0
    #: The machine-readable cause of a failure or of a transient error.
    reason_code: str | None = None

    @property
    def ended(self) -> bool:
        """The job's own end (success or failure): the claim must be closed before it is told."""
        return self.verdict in ("succeeded", "failed")


def poll_delay(
    schedule: PollSchedule,
    *,
    age_s: float | None,
    progress: int | None = None,
    hint_s: float | None = None,
) -> float:
    """Seconds until the next check of a job `age_s` old (None: unknown) that reports
    `progress` percent, when the provider asks for `hint_s` between checks.

    The wait is the longest of: the base interval, `age_share` of the job's age, and half the
    time the progress says is left (linear from submission); capped at `max_interval_s`. The
    provider's hint is a floor, never overridden: polling faster than it asks only earns 429s.
    So a job is seen done within about max(age_share x its duration, the hint), and the calls
    per job stay few.
    """
    wait = schedule.interval_s
    if age_s is not None and age_s > 0:
        wait = max(wait, schedule.age_share * age_s)
        if progress is not None and 0 < progress < 100:
            wait = max(wait, 0.5 * age_s * (100 - progress) / progress)
    wait = min(wait, schedule.max_interval_s)
    return float(max(wait, hint_s or 0.0))


def _check_of(
    submitted: JobSubmitted, event_id: uuid.UUID, causation_id: uuid.UUID, now: datetime
) -> PollDue:
    """A status check of the job `submitted` announced, carrying what its outcome needs."""
    return PollDue(
        event_id=event_id,
        occurred_at=now,
        request_id=submitted.request_id,
        causation_id=causation_id,
        provider=submitted.provider,
        provider_job_id=submitted.provider_job_id,
        endpoint_host=submitted.endpoint_host,
        last_status=submitted.status,
        request=submitted.request,
        submitted_at=submitted.occurred_at,
        cost_usd=submitted.cost_usd,
        price_version=submitted.price_version,
    )


def first_check(submitted: JobSubmitted, schedule: PollSchedule, now: datetime) -> PollOutcome:
    """A submitted job's first status check, `first_s` from now."""
    rid = submitted.request_id
    first = derive_event_id(rid, "PollDue", submitted.provider_job_id, 0)
    due = _check_of(submitted, first, submitted.event_id, now)
    return PollOutcome("scheduled", next_check=due, delay_s=schedule.first_s)


def decide_check(
    due: PollDue,
    seen: ObservedJob | ProviderError | NotConfigured | Cancelled,
    schedule: PollSchedule,
    now: datetime,
) -> PollOutcome:
    """What check `due` announces, given what the provider answered (`seen`)."""
    if isinstance(seen, Cancelled):
        # Nothing announced, nothing scheduled: the cancel's JobCancelled tells the story.
        return PollOutcome("cancelled")
    if isinstance(seen, NotConfigured):
        return _failed(
            due,
            "unknown_provider",
            f"provider {due.provider!r} is not configured in this poller",
            now,
        )
    if isinstance(seen, ProviderError):
        return _after_error(due, seen, schedule, now)
    if seen.status == "succeeded":
        succeeded = JobSucceeded(
            event_id=derive_event_id(due.request_id, "JobSucceeded", due.provider_job_id),
            occurred_at=now,
            request_id=due.request_id,
            causation_id=due.event_id,
            provider=due.provider,
            provider_job_id=due.provider_job_id,
            endpoint_host=due.endpoint_host,
            # A provider that names no generations serves the video under the job's own id.
            generation_ids=seen.generation_ids or [seen.job_id],
            expires_at=seen.expires_at,
            request=due.request,
            # The video exists: the estimate is what it costs (docs/costs.md).
            cost_usd=due.cost_usd,
            price_version=due.price_version,
        )
        return PollOutcome("succeeded", events=(succeeded,))
    if seen.status in ("failed", "cancelled"):
        return _failed(
            due,
            seen.failure_code or seen.status,
            seen.failure_message or f"the provider reports the job {seen.raw_status}",
            now,
        )
    # Still queued or running: news only when the status or the progress moved.
    news: tuple[Event, ...] = ()
    if (seen.raw_status, seen.progress) != (due.last_status, due.last_progress):
        news = (_progressed(due, seen, now),)
    return PollOutcome(
        "waiting",
        events=news,
        next_check=_next(
            due,
            now,
            last_status=seen.raw_status,
            last_progress=seen.progress,
            transient_errors=0,
        ),
        delay_s=poll_delay(
            schedule, age_s=_age_s(due, now), progress=seen.progress, hint_s=seen.poll_after_s
        ),
    )


def _after_error(
    due: PollDue, error: ProviderError, schedule: PollSchedule, now: datetime
) -> PollOutcome:
    # Only the retryable class (429, 5xx, timeouts) waits for another check; the rest is final.
    if not isinstance(error, RetryableProviderError):
        return _failed(due, error.code, str(error), now)
    errors = due.transient_errors + 1
    if errors >= schedule.max_transient_errors:
        return _failed(due, error.code, f"gave up after {errors} consecutive errors: {error}", now)
    delay = (
        poll_delay(schedule, age_s=_age_s(due, now))
        if error.retry_after is None
        else error.retry_after
    )
    return PollOutcome(
        "transient_error",
        next_check=_next(due, now, transient_errors=errors),
        delay_s=delay,
        reason_code=error.code,
    )


def _age_s(due: PollDue, now: datetime) -> float | None:
    if due.submitted_at is None:
        return None
    return (now - due.submitted_at).total_seconds()


def _next(due: PollDue, now: datetime, **changes: object) -> PollDue:
    attempt = due.attempt + 1
    return due.model_copy(
        update={
            "attempt": attempt,
            "event_id": derive_event_id(due.request_id, "PollDue", due.provider_job_id, attempt),
            "occurred_at": now,
            "causation_id": due.event_id,
            **changes,
        }
    )


def _progressed(due: PollDue, job: ObservedJob, now: datetime) -> JobProgressed:
    return JobProgressed(
        event_id=derive_event_id(
            due.request_id, "JobProgressed", due.provider_job_id, job.raw_status, job.progress
        ),
        occurred_at=now,
        request_id=due.request_id,
        causation_id=due.event_id,
        provider=due.provider,
        provider_job_id=due.provider_job_id,
        endpoint_host=due.endpoint_host,
        status=job.status,
        provider_status=job.raw_status,
        progress=job.progress,
    )


def _failed(due: PollDue, code: str, message: str, now: datetime) -> PollOutcome:
    failed = JobFailed(
        event_id=derive_event_id(due.request_id, "JobFailed", "poll", due.provider_job_id),
        occurred_at=now,
        request_id=due.request_id,
        causation_id=due.event_id,
        provider=due.provider,
        provider_job_id=due.provider_job_id,
        stage="poll",
        reason_code=code,
        message=clip_message(message),
        # The failover stage resubmits it when the cause is the provider's (an outage).
        request=due.request,
        # A job that failed at the provider is not billed (docs/costs.md).
        cost_usd=None if due.price_version is None else 0.0,
        price_version=due.price_version,
    )
    return PollOutcome("failed", events=(failed,), reason_code=code)


def hinted_check(hint: PollHinted, now: datetime) -> PollDue:
    """The check a provider's webhook asks for, now. Its id is the hint's own, so it never
    collides with the job's timed checks (which go on regardless)."""
    check_id = derive_event_id(hint.submitted.request_id, "PollHinted", hint.event_id)
    return _check_of(hint.submitted, check_id, hint.event_id, now)


def decide_hinted_check(
    due: PollDue,
    seen: ObservedJob | ProviderError | NotConfigured | Cancelled,
    schedule: PollSchedule,
    now: datetime,
) -> PollOutcome:
    """What an out-of-turn check announces: the job's end, if the provider itself reports one;
    nothing otherwise. An error, a job still running or a cancelled request are left to the
    timed checks, and nothing is scheduled: a hint (lost, forged or not) cannot stall, fail or
    duplicate the job's own chain. The events are the ones the timed check would announce (ids
    derived from the job, not the check), so whichever check comes second is dropped as a copy."""
    if isinstance(seen, (ProviderError, NotConfigured, Cancelled)):
        return PollOutcome("waiting")
    if seen.status not in ("succeeded", "failed", "cancelled"):
        return PollOutcome("waiting")
    outcome = decide_check(due, seen, schedule, now)
    return PollOutcome(outcome.verdict, events=outcome.events, reason_code=outcome.reason_code)
