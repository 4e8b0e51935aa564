"""The poller's decisions, table-driven: (check, provider's answer, schedule, now) -> outcome."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from schemas.events import (
    MESSAGE_MAX_CHARS,
    Event,
    JobFailed,
    JobProgressed,
    JobState,
    JobSubmitted,
    JobSucceeded,
    PollDue,
    RequestSnapshot,
    derive_event_id,
)
from vidpipe.errors import (
    AuthenticationFailed,
    IncompleteVideo,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from vidpipe.policy.polling import (
    NotConfigured,
    ObservedJob,
    PollSchedule,
    decide_check,
    first_check,
    poll_delay,
)
from vidpipe.providers.base import ProviderJob

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SCHEDULE = PollSchedule(first_s=0.5, interval_s=2, max_interval_s=60, max_transient_errors=3)


@dataclass(frozen=True)
class Seen:
    """An observed job written out by hand: any object of this shape will do."""

    status: JobState
    raw_status: str = ""
    progress: int | None = None
    job_id: str = "task_1"
    generation_ids: list[str] = field(default_factory=list)
    expires_at: datetime | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    poll_after_s: float | None = None


def _due(
    attempt: int = 4,
    last_status: str | None = "running",
    last_progress: int | None = 10,
    transient_errors: int = 0,
) -> PollDue:
    return PollDue(
        event_id=derive_event_id("r", "PollDue", "task_1", attempt),
        request_id="r",
        provider="azure-sora",
        provider_job_id="task_1",
        endpoint_host="h.example.com",
        attempt=attempt,
        last_status=last_status,
        last_progress=last_progress,
        transient_errors=transient_errors,
        request=RequestSnapshot(prompt="a fox"),
    )


@pytest.mark.parametrize(
    ("age_s", "progress", "hint_s", "delay"),
    [
        (None, None, None, 2.0),  # a timer from before submitted_at: the base interval
        (5.0, None, None, 2.0),  # young: the base interval
        (100.0, None, None, 10.0),  # a tenth of its age
        (1000.0, None, None, 60.0),  # capped
        (10.0, 10, None, 45.0),  # 10 % in 10 s: 90 s left, half of it
        (90.0, 90, None, 9.0),  # nearly done: a tenth of its age again
        (10.0, 0, None, 2.0),  # no progress yet says nothing of what is left
        (5.0, None, 7.0, 7.0),  # the provider's hint is a floor...
        (1000.0, None, 90.0, 90.0),  # ...even above the cap
        (100.0, None, 3.0, 10.0),  # ...but not a ceiling
    ],
)
def test_the_wait_grows_with_the_jobs_age_and_what_its_progress_says_is_left(
    age_s: float | None, progress: int | None, hint_s: float | None, delay: float
) -> None:
    assert poll_delay(SCHEDULE, age_s=age_s, progress=progress, hint_s=hint_s) == pytest.approx(
        delay
    )


def _checks_until_seen(duration_s: float, *, linear_progress: bool) -> tuple[int, float]:
    """Run the schedule against a job taking `duration_s`: (status calls, delay after done)."""
    at, calls = SCHEDULE.first_s, 0
    while True:
        calls += 1
        if at >= duration_s:
            return calls, at - duration_s
        progress = int(100 * at / duration_s) if linear_progress else None
        at += poll_delay(SCHEDULE, age_s=at, progress=progress)


@pytest.mark.parametrize("linear_progress", [False, True])
@pytest.mark.parametrize("duration_s", [0.3, 3.0, 7.0, 30.0, 120.0, 600.0, 3600.0])
def test_a_job_is_seen_done_within_a_tenth_of_its_duration_for_few_calls(
    duration_s: float, linear_progress: bool
) -> None:
    calls, late_s = _checks_until_seen(duration_s, linear_progress=linear_progress)
    assert late_s <= max(SCHEDULE.interval_s, SCHEDULE.age_share * duration_s) + 1e-9
    # Calls grow with the logarithm of the duration until the cap makes them linear...
    assert calls <= 50 + max(0.0, duration_s - 600) / SCHEDULE.max_interval_s
    if duration_s >= 120:  # ...and are far fewer than a fixed interval's
        assert calls <= 0.5 * duration_s / SCHEDULE.interval_s
    if linear_progress and 120 <= duration_s <= 600:  # progress says when to come back
        assert calls <= 15


def test_a_submitted_job_is_first_checked_soon() -> None:
    submitted = JobSubmitted(
        event_id=uuid.uuid4(),
        request_id="r",
        provider="azure-sora",
        provider_job_id="task_1",
        endpoint_host="h.example.com",
        request=RequestSnapshot(prompt="a fox"),
    )
    outcome = first_check(submitted, SCHEDULE, NOW)
    assert (outcome.verdict, outcome.events, outcome.delay_s) == ("scheduled", (), 0.5)
    due = outcome.next_check
    assert due is not None
    assert due.event_id == derive_event_id("r", "PollDue", "task_1", 0)
    assert (due.attempt, due.last_status, due.causation_id) == (0, "queued", submitted.event_id)
    assert (due.endpoint_host, due.request, due.occurred_at) == (
        "h.example.com",
        submitted.request,
        NOW,
    )
    assert due.submitted_at == submitted.occurred_at


Answer = ObservedJob | ProviderError | NotConfigured
# name: (what the provider said, verdict, event types published, delay of the next check or None)
CASES: dict[str, tuple[Answer, str, list[type[Event]], float | None]] = {
    "same status and progress": (Seen("running", "running", 10), "waiting", [], 2),
    "progress moved": (Seen("running", "running", 40), "waiting", [JobProgressed], 2),
    "provider word moved": (Seen("running", "processing", 10), "waiting", [JobProgressed], 2),
    "provider asks for 7 s": (
        Seen("queued", "queued", None, poll_after_s=7),
        "waiting",
        [JobProgressed],
        7,
    ),
    "succeeded": (Seen("succeeded", generation_ids=["g1"]), "succeeded", [JobSucceeded], None),
    "failed": (Seen("failed", failure_code="moderation"), "failed", [JobFailed], None),
    "cancelled": (Seen("cancelled", "cancelled"), "failed", [JobFailed], None),
    "503": (ProviderUnavailable("503", status_code=503), "transient_error", [], 2),
    "429 with Retry-After": (
        RateLimited("slow", status_code=429, retry_after=9),
        "transient_error",
        [],
        9,
    ),
    "401": (AuthenticationFailed("401", status_code=401), "failed", [JobFailed], None),
    "404": (NotFound("gone", status_code=404), "failed", [JobFailed], None),
    # Retryable for a download, but not a RetryableProviderError: a status check ends on it.
    "cut transfer": (IncompleteVideo("cut"), "failed", [JobFailed], None),
    "no client": (NotConfigured(), "failed", [JobFailed], None),
}


@pytest.mark.parametrize(
    ("seen", "verdict", "published", "delay"),
    list(CASES.values()),
    ids=list(CASES),
)
def test_each_answer_decides_what_to_publish_and_when_to_look_again(
    seen: Answer, verdict: str, published: list[type[Event]], delay: float | None
) -> None:
    due = _due()
    outcome = decide_check(due, seen, SCHEDULE, NOW)
    assert outcome.verdict == verdict
    assert [type(e) for e in outcome.events] == published
    assert all(e.occurred_at == NOW and e.causation_id == due.event_id for e in outcome.events)
    if delay is None:
        assert outcome.next_check is None
    else:
        assert outcome.delay_s == delay
        following = outcome.next_check
        assert following is not None
        assert following.attempt == 5
        assert following.event_id == derive_event_id("r", "PollDue", "task_1", 5)
        assert (following.causation_id, following.occurred_at) == (due.event_id, NOW)


def test_a_running_check_remembers_what_it_saw_and_clears_the_error_count() -> None:
    outcome = decide_check(
        _due(transient_errors=2), Seen("running", "processing", 55), SCHEDULE, NOW
    )
    following = outcome.next_check
    assert following is not None
    assert (following.last_status, following.last_progress, following.transient_errors) == (
        "processing",
        55,
        0,
    )
    (progressed,) = outcome.events
    assert isinstance(progressed, JobProgressed)
    assert (progressed.status, progressed.provider_status, progressed.progress) == (
        "running",
        "processing",
        55,
    )
    # The id names the status and progress seen, so a repeated check repeats the same event.
    assert progressed.event_id == derive_event_id("r", "JobProgressed", "task_1", "processing", 55)


def test_transient_errors_are_counted_and_keep_the_last_status() -> None:
    outcome = decide_check(_due(transient_errors=1), ProviderUnavailable("503"), SCHEDULE, NOW)
    following = outcome.next_check
    assert following is not None
    assert (following.transient_errors, following.last_status, following.last_progress) == (
        2,
        "running",
        10,
    )
    assert outcome.reason_code == "provider_unavailable"


def test_too_many_transient_errors_in_a_row_fail_the_job() -> None:
    outcome = decide_check(
        _due(transient_errors=2), ProviderUnavailable("503 again"), SCHEDULE, NOW
    )
    (failed,) = outcome.events
    assert isinstance(failed, JobFailed)
    assert (failed.stage, failed.reason_code) == ("poll", "provider_unavailable")
    assert failed.message == "gave up after 3 consecutive errors: 503 again"
    assert outcome.next_check is None


def test_success_names_the_generations_or_else_the_job() -> None:
    expires = datetime(2026, 11, 25, tzinfo=UTC)
    named = decide_check(
        _due(), Seen("succeeded", generation_ids=["g1", "g2"], expires_at=expires), SCHEDULE, NOW
    )
    (done,) = named.events
    assert isinstance(done, JobSucceeded)
    assert (done.generation_ids, done.expires_at) == (["g1", "g2"], expires)
    assert done.request == RequestSnapshot(prompt="a fox")
    assert done.event_id == derive_event_id("r", "JobSucceeded", "task_1")
    (unnamed,) = decide_check(_due(), Seen("succeeded"), SCHEDULE, NOW).events
    assert isinstance(unnamed, JobSucceeded) and unnamed.generation_ids == ["task_1"]


@pytest.mark.parametrize(
    ("seen", "code", "message"),
    [
        (
            Seen("failed", "Failed", failure_code="output_moderation", failure_message="blocked"),
            "output_moderation",
            "blocked",
        ),
        (Seen("cancelled", "Cancelled"), "cancelled", "the provider reports the job Cancelled"),
        (
            NotConfigured(),
            "unknown_provider",
            "provider 'azure-sora' is not configured in this poller",
        ),
        (Seen("failed", "failed", failure_message="x" * 5000), "failed", "x" * MESSAGE_MAX_CHARS),
    ],
)
def test_failures_say_why_within_the_message_limit(
    seen: ObservedJob | NotConfigured, code: str, message: str
) -> None:
    outcome = decide_check(_due(), seen, SCHEDULE, NOW)
    (failed,) = outcome.events
    assert isinstance(failed, JobFailed)
    assert (failed.reason_code, failed.message) == (code, message)
    assert failed.event_id == derive_event_id("r", "JobFailed", "poll", "task_1")
    assert outcome.reason_code == code


def test_the_decision_is_a_function_of_its_inputs() -> None:
    job = ProviderJob("task_1", "running", "running", progress=70)
    first = decide_check(_due(), job, SCHEDULE, NOW)
    again = decide_check(_due(), job, SCHEDULE, NOW)
    assert first == again
