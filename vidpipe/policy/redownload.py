"""The redownloader's schedule: how long to wait before each retry, and when to give up.

The seed's "background job that retries every hour", without cron: intervals grow from
`initial_s` (doubling) up to `max_interval_s`, at most `max_attempts` retries, and no retry is
scheduled past the provider's `expires_at`, since the asset is gone by then (one last try just
before expiry when there is room). Pure: the time is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

__all__ = [
    "GiveUp",
    "RetryAt",
    "RetrySchedule",
    "before_attempt",
    "no_client",
    "plan_retry",
    "retry_delay",
]

# How long before `expires_at` the last try goes, when the regular interval would overshoot it.
_LAST_TRY_MARGIN_S = 1.0


@dataclass(frozen=True)
class RetrySchedule:
    initial_s: float = 60.0
    max_interval_s: float = 3600.0
    max_attempts: int = 48


@dataclass(frozen=True)
class RetryAt:
    """Retry number `attempt` (1 = the first retry) goes in `delay_s` seconds, at `at`."""

    attempt: int
    delay_s: float
    at: datetime


@dataclass(frozen=True)
class GiveUp:
    """Stop retrying after `attempts` retries, for `reason` (told to people as `message`)."""

    reason: Literal["expired", "max_attempts", "not_pursued"]
    attempts: int
    message: str


def retry_delay(attempt: int, schedule: RetrySchedule) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, …): doubling, capped."""
    return float(min(schedule.max_interval_s, schedule.initial_s * 2 ** max(0, attempt - 1)))


def plan_retry(
    attempt: int, expires_at: datetime | None, schedule: RetrySchedule, now: datetime
) -> RetryAt | GiveUp:
    """When retry number `attempt` goes, or why there is none."""
    if attempt > schedule.max_attempts:
        return _gave_up("max_attempts", attempt - 1, expires_at)
    delay = retry_delay(attempt, schedule)
    if expires_at is not None and now + timedelta(seconds=delay) >= expires_at:
        remaining = (expires_at - now).total_seconds()
        if remaining <= _LAST_TRY_MARGIN_S:
            return _gave_up("expired", attempt - 1, expires_at)
        delay = remaining - _LAST_TRY_MARGIN_S
    return RetryAt(attempt, delay, now + timedelta(seconds=delay))


def before_attempt(attempt: int, expires_at: datetime | None, now: datetime) -> GiveUp | None:
    """Retry number `attempt` has come due: give up when the asset has expired meanwhile."""
    if expires_at is not None and now >= expires_at:
        return _gave_up("expired", attempt - 1, expires_at)
    return None


def no_client(attempt: int, provider: str) -> GiveUp:
    """Retry number `attempt` cannot run: this process has no client for `provider`."""
    return GiveUp("max_attempts", attempt - 1, f"provider {provider!r} is not configured here")


def _gave_up(
    reason: Literal["expired", "max_attempts"], attempts: int, expires_at: datetime | None
) -> GiveUp:
    if reason == "expired" and expires_at is not None:
        return GiveUp(reason, attempts, f"the provider's asset expired at {expires_at.isoformat()}")
    return GiveUp(reason, attempts, f"no download after {attempts} retries")
