"""Fetch deadlines from each provider's result expiry: act before the URL dies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vidpipe.policy.expiry import MAX_MARGIN, RESULT_LIFETIME, fetch_deadline, result_end
from vidpipe.policy.redownload import RetryAt, RetrySchedule, before_attempt, plan_retry

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("provider", "lifetime"),
    [
        ("replicate", timedelta(hours=1)),
        ("azure-sora", timedelta(hours=24)),
        ("openai-videos", timedelta(hours=24)),
        ("gemini", timedelta(hours=48)),
        ("runway", timedelta(hours=24)),
        ("fal", timedelta(hours=24)),
    ],
)
def test_without_a_stated_expiry_the_providers_lifetime_counts(
    provider: str, lifetime: timedelta
) -> None:
    assert RESULT_LIFETIME[provider] == lifetime
    assert result_end(provider, None, T0) == T0 + lifetime
    assert fetch_deadline(provider, None, T0) == T0 + lifetime - MAX_MARGIN


def test_the_jobs_own_expiry_wins_and_a_short_window_keeps_a_tenth() -> None:
    expires = T0 + timedelta(seconds=40)
    assert result_end("replicate", expires, T0) == expires
    assert fetch_deadline("replicate", expires, T0) == T0 + timedelta(seconds=36)
    # An expiry already past leaves no margin to take.
    past = T0 - timedelta(seconds=5)
    assert fetch_deadline("azure-sora", past, T0) == past


def test_an_unknown_provider_without_expiry_has_no_deadline() -> None:
    assert fetch_deadline("acme", None, T0) is None
    assert fetch_deadline("acme", T0 + timedelta(hours=1), T0) == T0 + timedelta(minutes=55)


def test_replicates_hour_ends_the_retries_before_the_output_is_deleted() -> None:
    deadline = fetch_deadline("replicate", None, T0)
    assert deadline is not None
    schedule = RetrySchedule(initial_s=60, max_interval_s=3600, max_attempts=48)
    now, attempt, tries = T0, 1, []
    while True:
        plan = plan_retry(attempt, deadline, schedule, now)
        if not isinstance(plan, RetryAt):
            break
        tries.append(plan.at)
        now, attempt = plan.at, attempt + 1
    assert tries and max(tries) < T0 + timedelta(hours=1) - timedelta(minutes=4)
    assert before_attempt(attempt, deadline, deadline) is not None
