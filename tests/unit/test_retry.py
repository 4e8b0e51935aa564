"""The one retry policy, vidpipe.net.retry, shared by the provider clients and the webhooks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from vidpipe.errors import InvalidRequest, ProviderUnavailable, RateLimited, StorageError
from vidpipe.net.retry import NO_RETRY, RetryPolicy, is_retryable, parse_retry_after

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)


class Sleeps:
    """Injected into RetryPolicy: records the waits instead of taking them."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Script:
    """A call that raises the scripted errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


# --- Retry-After ------------------------------------------------------------------------------


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"Retry-After": " 2.5 "})) == 2.5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert parse_retry_after(httpx.Headers({"x-ms-retry-after-ms": "250"})) == 0.25
    date = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": date}), now=NOW) == 30.0
    past = format_datetime(NOW - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": past}), now=NOW) == 0.0
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers()) is None


def test_unusable_hints_are_ignored() -> None:
    # A garbled millisecond header falls back to Retry-After; negatives and infinities mean none.
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "x", "retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "-5"})) is None
    assert parse_retry_after(httpx.Headers({"retry-after": "-1"})) is None
    assert parse_retry_after(httpx.Headers({"retry-after": "inf"})) is None


def test_any_mapping_of_lower_case_names_works() -> None:
    assert parse_retry_after({"retry-after": "4"}) == 4.0


# --- what is retried --------------------------------------------------------------------------


def test_errors_say_whether_they_are_retryable() -> None:
    assert is_retryable(RateLimited("slow down"))
    assert is_retryable(ProviderUnavailable("502"))
    assert is_retryable(StorageError("500", retryable=True))
    assert not is_retryable(StorageError("413", retryable=False))
    assert not is_retryable(InvalidRequest("400"))
    assert not is_retryable(ValueError("a bug"))


async def test_retryable_errors_are_retried_until_success() -> None:
    sleeps = Sleeps()
    call = Script(ProviderUnavailable("502"), RateLimited("429", retry_after=2.0))
    assert await RetryPolicy(sleep=sleeps).call(call) == "done"
    assert call.calls == 3
    assert len(sleeps.waits) == 2 and sleeps.waits[1] == 2.0  # the server's word wins


async def test_other_errors_are_raised_at_once() -> None:
    sleeps = Sleeps()
    call = Script(InvalidRequest("400"))
    with pytest.raises(InvalidRequest):
        await RetryPolicy(sleep=sleeps).call(call)
    assert call.calls == 1 and sleeps.waits == []


async def test_attempts_are_bounded_and_the_last_error_raised_unwrapped() -> None:
    sleeps = Sleeps()
    call = Script(*(RateLimited(f"429 #{n}", retry_after=1.0) for n in range(10)))
    with pytest.raises(RateLimited, match="#2"):
        await RetryPolicy(attempts=3, sleep=sleeps).call(call)
    assert call.calls == 3 and sleeps.waits == [1.0, 1.0]


async def test_no_retry_makes_one_attempt() -> None:
    call = Script(ProviderUnavailable("502"))
    with pytest.raises(ProviderUnavailable):
        await NO_RETRY.call(call)
    assert call.calls == 1


async def test_total_wait_is_bounded() -> None:
    sleeps = Sleeps()
    call = Script(*(RateLimited("429", retry_after=12.0) for _ in range(10)))
    with pytest.raises(RateLimited) as info:
        await RetryPolicy(attempts=10, max_total_wait_s=30, sleep=sleeps).call(call)
    # 12 + 12 fits in 30 s; a third wait would not, so the hint goes back to the caller.
    assert sleeps.waits == [12.0, 12.0] and call.calls == 3
    assert info.value.retry_after == 12.0


async def test_a_single_wait_longer_than_max_retry_after_ends_the_retries() -> None:
    sleeps = Sleeps()
    call = Script(RateLimited("429", retry_after=3600.0))
    policy = RetryPolicy(max_retry_after_s=60.0, max_total_wait_s=10_000, sleep=sleeps)
    with pytest.raises(RateLimited):
        await policy.call(call)
    assert call.calls == 1 and sleeps.waits == []


async def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    sleeps = Sleeps()
    call = Script(*(ProviderUnavailable("503") for _ in range(4)))
    policy = RetryPolicy(
        attempts=5, base_delay_s=1.0, max_delay_s=3.0, max_total_wait_s=100, sleep=sleeps
    )
    assert await policy.call(call) == "done"
    first, second, third, fourth = sleeps.waits
    assert 1.0 <= first <= 2.0
    assert 2.0 <= second <= 3.0
    assert third == 3.0 and fourth == 3.0


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
