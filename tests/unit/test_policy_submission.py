"""The submitter's decisions, table-driven: which failures wait, for how long, and which fail."""

from __future__ import annotations

import pytest

from vidpipe.errors import (
    AuthenticationFailed,
    ContentPolicyViolation,
    InputFetchError,
    InvalidRequest,
    PlaceholderImageError,
    ProviderUnavailable,
    RateLimited,
    UnsafeURLError,
    VidpipeError,
)
from vidpipe.policy.submission import (
    Reject,
    Wait,
    after_submit_error,
    quota_full,
    unknown_provider,
)

QUOTA_WAIT_S = 5.0


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (RateLimited("slow", retry_after=7), Wait(7, "provider_busy", "rate_limited")),
        (RateLimited("slow", retry_after=0), Wait(0, "provider_busy", "rate_limited")),
        (RateLimited("slow"), Wait(5, "provider_busy", "rate_limited")),
        (ProviderUnavailable("503"), Wait(5, "provider_busy", "provider_unavailable")),
        (AuthenticationFailed("401"), Reject("authentication_failed", "401")),
        (InvalidRequest("bad size"), Reject("invalid_request", "bad size")),
        (ContentPolicyViolation("no"), Reject("content_policy_violation", "no")),
        (UnsafeURLError("private address"), Reject("unsafe_input_url", "private address")),
        # An image that cannot be fetched is the request's fault too, even when retryable.
        (InputFetchError("HTTP 503", retryable=True), Reject("unsafe_input_url", "HTTP 503")),
        (PlaceholderImageError("not an image"), Reject("input_rejected", "not an image")),
        (VidpipeError("odd"), Reject("input_rejected", "odd")),
    ],
)
def test_a_failed_submission_waits_or_fails(error: VidpipeError, decision: Wait | Reject) -> None:
    assert after_submit_error(error, QUOTA_WAIT_S) == decision


def test_a_full_quota_waits_the_configured_time() -> None:
    assert quota_full(QUOTA_WAIT_S) == Wait(5, "quota_full")


@pytest.mark.parametrize(
    ("configured", "listed"),
    [(["openai-videos", "azure-sora"], "azure-sora, openai-videos"), ([], "none")],
)
def test_an_unknown_provider_is_named_with_the_ones_there_are(
    configured: list[str], listed: str
) -> None:
    assert unknown_provider("nope", configured) == Reject(
        "unknown_provider", f"provider 'nope' is not configured here (configured: {listed})"
    )
