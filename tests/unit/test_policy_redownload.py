"""The redownloader's schedule, table-driven: when each retry goes, and when it gives up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vidpipe.policy.redownload import (
    GiveUp,
    RetryAt,
    RetrySchedule,
    before_attempt,
    no_client,
    plan_retry,
    retry_delay,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HOURLY = RetrySchedule(initial_s=60, max_interval_s=3600, max_attempts=5)


def _in(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (12, 3600)]
)
def test_intervals_double_up_to_hourly(attempt: int, delay: float) -> None:
    assert retry_delay(attempt, HOURLY) == delay


@pytest.mark.parametrize(
    ("attempt", "expires_at", "plan"),
    [
        # No expiry known: the plain interval.
        (1, None, RetryAt(1, 60, _in(60))),
        (3, None, RetryAt(3, 240, _in(240))),
        # Expiry far enough: the plain interval.
        (2, _in(3600), RetryAt(2, 120, _in(120))),
        # The interval would reach or pass expiry: one last try a second before it.
        (2, _in(40), RetryAt(2, 39, _in(39))),
        (1, _in(60), RetryAt(1, 59, _in(59))),
        # No room for a last try.
        (2, _in(1), GiveUp("expired", 1, f"the provider's asset expired at {_in(1).isoformat()}")),
        (
            2,
            _in(-5),
            GiveUp("expired", 1, f"the provider's asset expired at {_in(-5).isoformat()}"),
        ),
        # Out of attempts (5 retries allowed: the 6th is never scheduled).
        (5, None, RetryAt(5, 960, _in(960))),
        (6, None, GiveUp("max_attempts", 5, "no download after 5 retries")),
        (6, _in(10), GiveUp("max_attempts", 5, "no download after 5 retries")),
    ],
)
def test_each_retry_is_planned_or_refused(
    attempt: int, expires_at: datetime | None, plan: RetryAt | GiveUp
) -> None:
    assert plan_retry(attempt, expires_at, HOURLY, NOW) == plan


@pytest.mark.parametrize(
    ("expires_at", "verdict"),
    [
        (None, None),
        (_in(1), None),
        (NOW, GiveUp("expired", 2, f"the provider's asset expired at {NOW.isoformat()}")),
        (_in(-60), GiveUp("expired", 2, f"the provider's asset expired at {_in(-60).isoformat()}")),
    ],
)
def test_a_due_retry_stops_when_the_asset_has_expired_meanwhile(
    expires_at: datetime | None, verdict: GiveUp | None
) -> None:
    assert before_attempt(3, expires_at, NOW) == verdict


def test_a_retry_without_a_client_gives_up_saying_why() -> None:
    assert no_client(4, "azure-sora") == GiveUp(
        "max_attempts", 3, "provider 'azure-sora' is not configured here"
    )
