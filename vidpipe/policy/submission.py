"""The submitter's decisions: when a request waits for another try, and when it fails.

Pure: the handler asks, then does the I/O (the ledger, the timer, JobFailed). A request that
waits is scheduled on a durable timer and comes back; it is never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from vidpipe.errors import ProviderError, RetryableProviderError, UnsafeURLError, VidpipeError

__all__ = ["Reject", "Wait", "after_submit_error", "quota_full", "unknown_provider"]


@dataclass(frozen=True)
class Wait:
    """Try the request again in `delay_s` seconds."""

    delay_s: float
    reason: Literal["quota_full", "provider_busy"]
    #: The provider's error code when the provider asked us to wait.
    code: str | None = None


@dataclass(frozen=True)
class Reject:
    """The request ends: JobFailed(stage="submit") with this cause."""

    reason_code: str
    message: str


def quota_full(quota_wait_s: float) -> Wait:
    """Every one of the provider's job slots is taken: wait for one to free."""
    return Wait(quota_wait_s, "quota_full")


def unknown_provider(name: str, configured: Iterable[str]) -> Reject:
    """The request names a provider this submitter has no client for."""
    known = ", ".join(sorted(configured)) or "none"
    return Reject(
        "unknown_provider", f"provider {name!r} is not configured here (configured: {known})"
    )


def after_submit_error(error: VidpipeError, quota_wait_s: float) -> Wait | Reject:
    """What a failed submission means: retryable provider errors (429, 5xx) wait, as long as the
    provider's Retry-After when it gave one; everything else fails the request."""
    if isinstance(error, RetryableProviderError):
        delay = quota_wait_s if error.retry_after is None else error.retry_after
        return Wait(delay, "provider_busy", error.code)
    if isinstance(error, ProviderError):
        return Reject(error.code, str(error))
    if isinstance(error, UnsafeURLError):
        # Where the input image points (or what it serves) is the request's fault.
        return Reject("unsafe_input_url", str(error))
    return Reject("input_rejected", str(error))
