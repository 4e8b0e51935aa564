"""The submitter's decisions: create or reconcile, which listed job is ours, when a request
waits for another try, and when it fails.

Pure: the handler asks, then does the I/O (the ledger, the provider, the timer, JobFailed). A
request that waits is scheduled on a durable timer and comes back; it is never dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from vidpipe.errors import (
    ProviderError,
    RateLimited,
    RetryableProviderError,
    UnsafeURLError,
    VidpipeError,
)

__all__ = [
    "CLOCK_SKEW",
    "Create",
    "ListedJob",
    "Reconcile",
    "Reject",
    "Wait",
    "after_fetch_error",
    "after_submit_error",
    "after_unexpected_error",
    "match_job",
    "next_step",
    "quota_full",
    "unknown_provider",
    "unsafe_callback",
]

#: How far the provider's clock may be behind ours: jobs listed this long before the intent
#: still count as candidates.
CLOCK_SKEW = timedelta(minutes=2)


@dataclass(frozen=True)
class Wait:
    """Try the request again in `delay_s` seconds."""

    delay_s: float
    reason: Literal["quota_full", "provider_busy", "over_budget"]
    #: The provider's error code when the provider asked us to wait.
    code: str | None = None
    #: The create may have reached the provider (lost answer, 5xx): keep the claim and the
    #: intent, and reconcile before the next create. False when the provider said no (429).
    job_may_exist: bool = False


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


def unsafe_callback(callback_url: str | None, *, allow_private: bool = False) -> Reject | None:
    """A callback written as `localhost` or a literal address that is not globally routable
    (loopback, private, link-local/metadata, IPv4-mapped ones included) fails the request
    before anything is paid for. A name that only resolves to one is the notifier guard's to
    refuse when it sends (DNS may change in between); `allow_private` is the development switch
    the guard honours too."""
    if callback_url is None or allow_private:
        return None
    name = (urlsplit(callback_url).hostname or "").rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        private = True
    else:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        private = not address.is_global
    if not private:
        return None
    return Reject("unsafe_callback_url", "callback_url points at a loopback or private address")


def after_submit_error(error: VidpipeError, quota_wait_s: float) -> Wait | Reject:
    """What a failed submission means: retryable provider errors (429, 5xx) wait, as long as the
    provider's Retry-After when it gave one; everything else fails the request."""
    if isinstance(error, RetryableProviderError):
        delay = quota_wait_s if error.retry_after is None else error.retry_after
        return Wait(delay, "provider_busy", error.code, not isinstance(error, RateLimited))
    if isinstance(error, ProviderError):
        return Reject(error.code, str(error))
    if isinstance(error, UnsafeURLError):
        # Where the input image points (or what it serves) is the request's fault.
        return Reject("unsafe_input_url", str(error))
    return Reject("input_rejected", str(error))


def after_fetch_error(error: BaseException) -> Reject:
    """The input image could not be fetched: whatever was raised, the request fails (and its
    slot is freed); only the exception type is told, as messages may hold the signed URL."""
    if isinstance(error, VidpipeError):
        decision = after_submit_error(error, 0.0)
        if isinstance(decision, Reject):
            return decision
    return Reject(
        "input_fetch_failed", f"the input image could not be fetched ({type(error).__name__})"
    )


def after_unexpected_error(error: BaseException) -> Reject:
    """The create raised something no rule knows: fail the request rather than wedge it."""
    return Reject("submit_error", f"the submission failed unexpectedly ({type(error).__name__})")


@dataclass(frozen=True)
class Create:
    """No create was attempted for this request: create the job."""


@dataclass(frozen=True)
class Reconcile:
    """A create was attempted at `intent_at` and its outcome is unknown: list the provider's jobs
    created since `since` and adopt ours before creating anything."""

    since: datetime


def next_step(intent_at: datetime | None) -> Create | Reconcile:
    """Create, or reconcile first when an earlier attempt recorded its intent."""
    if intent_at is None:
        return Create()
    return Reconcile(intent_at - CLOCK_SKEW)


class ListedJob(Protocol):
    """What matching reads of a listed provider job (`ProviderJob` has it)."""

    @property
    def job_id(self) -> str: ...
    @property
    def created_at(self) -> datetime | None: ...
    @property
    def prompt(self) -> str | None: ...
    @property
    def width(self) -> int | None: ...
    @property
    def height(self) -> int | None: ...
    @property
    def seconds(self) -> int | None: ...


J = TypeVar("J", bound=ListedJob)


def match_job(
    listed: Iterable[J],
    *,
    prompt: str,
    width: int,
    height: int,
    seconds: int,
    since: datetime,
    taken: Collection[str] = (),
) -> J | None:
    """The listed job that is this request's lost create, or None.

    Neither protocol echoes the Idempotency-Key or a caller's marker, so a job matches on what the
    request sent: the same prompt, and the same size and duration wherever the job states them,
    created at or after `since`, and not already another request's job (`taken`). Of several,
    the oldest: the first create is the one whose answer was lost."""
    candidates = [
        job
        for job in listed
        if job.prompt == prompt
        and job.job_id not in taken
        and (job.created_at is None or job.created_at >= since)
        and job.width in (None, width)
        and job.height in (None, height)
        and job.seconds in (None, seconds)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda job: (job.created_at is None, job.created_at or since))
