"""The one retry policy for HTTP calls: read the server's Retry-After, back off, know when to stop.

Used by the provider clients (create and status calls) and by the webhook sender. An error is
retried when its `retryable` attribute is true, which is how every vidpipe error that is worth
another try says so; its `retry_after` attribute (seconds, from `parse_retry_after`) wins over
the jittered exponential backoff. Retries end after `attempts` calls, when the next wait would take
the total past `max_total_wait_s`, or when a single wait would be longer than `max_retry_after_s`;
the last error is then raised as is, so the caller can reschedule instead of blocking.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.wait import wait_exponential_jitter

from vidpipe.errors import ProviderError
from vidpipe.metrics import current as current_metrics

__all__ = [
    "NO_RETRY",
    "RetryPolicy",
    "Sleep",
    "is_retryable",
    "parse_retry_after",
    "retry_after_of",
]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

# Millisecond hints are more precise than Retry-After, so they are read first (OpenAI, Azure).
_MILLISECOND_HEADERS = ("retry-after-ms", "x-ms-retry-after-ms")


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `retry-after` (secs or date).

    `headers` should match names case-insensitively, as `httpx.Headers` does. None when there is
    no usable hint; a date in the past means 0.
    """
    for name in _MILLISECOND_HEADERS:
        raw = headers.get(name)
        if raw is not None:
            try:
                millis = float(raw)
            except ValueError:
                continue
            if math.isfinite(millis) and millis >= 0:
                return millis / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT by definition
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, delta)


def is_retryable(exc: BaseException) -> bool:
    """Whether `exc` says another try may succeed (its `retryable` attribute is true)."""
    return getattr(exc, "retryable", False) is True


def retry_after_of(exc: BaseException | None) -> float | None:
    """The wait `exc` carries from the server (its `retry_after` attribute), if any."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Retry retryable errors with jittered exponential backoff, within bounds.

    Waits are `base_delay_s * 2**n` plus up to `base_delay_s` of jitter, capped at `max_delay_s`,
    unless the error carries the server's `retry_after`. `sleep` is injectable so tests record the
    waits instead of taking them.
    """

    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0
    max_total_wait_s: float = 30.0
    #: A single wait longer than this ends the retries (None: only the total bounds it).
    max_retry_after_s: float | None = None
    sleep: Sleep = field(default=asyncio.sleep, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def wait_s(self, state: RetryCallState) -> float:
        """The pause before the next attempt: the server's word, else the backoff."""
        hint = retry_after_of(state.outcome.exception() if state.outcome is not None else None)
        if hint is not None:
            return hint
        # `initial`, the first wait (tenacity 9.2 renames it `multiplier`; 9.1 is pinned).
        backoff = wait_exponential_jitter(
            initial=self.base_delay_s, max=self.max_delay_s, jitter=self.base_delay_s
        )
        return float(backoff(state))

    def should_stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.attempts:
            return True
        if self.max_retry_after_s is not None and state.upcoming_sleep > self.max_retry_after_s:
            return True
        return state.idle_for + state.upcoming_sleep > self.max_total_wait_s

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """`fn()`, retried while it raises retryable errors; the last error is raised unwrapped."""
        retrying = AsyncRetrying(
            sleep=self.sleep,
            stop=self.should_stop,
            wait=self.wait_s,
            retry=retry_if_exception(is_retryable),
            reraise=True,  # callers see the error itself, not tenacity's RetryError
            before_sleep=_count_retry,
        )
        return await retrying(fn)


NO_RETRY = RetryPolicy(attempts=1)


def _count_retry(state: RetryCallState) -> None:
    # Only provider calls count (webhooks retry through the same policy).
    error = state.outcome.exception() if state.outcome is not None else None
    if isinstance(error, ProviderError):
        current_metrics().provider_retry(error.code)
