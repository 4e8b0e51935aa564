"""The submitter's decisions, table-driven: which failures wait, for how long, and which fail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import idna
import pytest

from vidpipe.errors import (
    AuthenticationFailed,
    ContentPolicyViolation,
    CreateOutcomeUnknown,
    InputFetchError,
    InvalidRequest,
    PlaceholderImageError,
    ProviderUnavailable,
    RateLimited,
    UnsafeURLError,
    VidpipeError,
)
from vidpipe.policy.submission import (
    CLOCK_SKEW,
    Create,
    Reconcile,
    Reject,
    Wait,
    after_fetch_error,
    after_submit_error,
    after_unexpected_error,
    match_job,
    next_step,
    quota_full,
    unknown_provider,
    unsafe_callback,
)

QUOTA_WAIT_S = 5.0


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (RateLimited("slow", retry_after=7), Wait(7, "provider_busy", "rate_limited")),
        (RateLimited("slow", retry_after=0), Wait(0, "provider_busy", "rate_limited")),
        (RateLimited("slow"), Wait(5, "provider_busy", "rate_limited")),
        # A 5xx or a lost answer may hide a created job: the claim and its intent are kept.
        (ProviderUnavailable("503"), Wait(5, "provider_busy", "provider_unavailable", True)),
        (CreateOutcomeUnknown("reset"), Wait(5, "provider_busy", "create_outcome_unknown", True)),
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


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (idna.IDNAError("bad label"), Reject("input_fetch_failed", "(IDNAError)")),
        (UnicodeError("codec"), Reject("input_fetch_failed", "(UnicodeError)")),
        (RuntimeError("https://x/?sig=secret"), Reject("input_fetch_failed", "(RuntimeError)")),
        (InputFetchError("HTTP 404"), Reject("unsafe_input_url", "HTTP 404")),
        (PlaceholderImageError("not an image"), Reject("input_rejected", "not an image")),
    ],
)
def test_an_input_image_that_cannot_be_fetched_fails_the_request(
    error: BaseException, decision: Reject
) -> None:
    got = after_fetch_error(error)
    assert got.reason_code == decision.reason_code
    assert decision.message in got.message
    assert "secret" not in got.message


def test_an_unexpected_create_error_fails_without_its_message() -> None:
    got = after_unexpected_error(KeyError("https://x/?sig=secret"))
    assert got.reason_code == "submit_error" and "secret" not in got.message


T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def test_an_open_intent_means_reconcile_first() -> None:
    assert next_step(None) == Create()
    assert next_step(T0) == Reconcile(T0 - CLOCK_SKEW)


@dataclass(frozen=True)
class Listed:
    job_id: str
    created_at: datetime | None = T0
    prompt: str | None = "a cat"
    width: int | None = 1280
    height: int | None = 720
    seconds: int | None = 5


def _match(listed: list[Listed], taken: tuple[str, ...] = ()) -> str | None:
    found = match_job(
        listed, prompt="a cat", width=1280, height=720, seconds=5, since=T0, taken=taken
    )
    return found.job_id if found is not None else None


@pytest.mark.parametrize(
    ("listed", "taken", "adopted"),
    [
        ([], (), None),
        ([Listed("a")], (), "a"),
        ([Listed("a", prompt="a dog")], (), None),
        ([Listed("a", width=720, height=1280)], (), None),
        ([Listed("a", seconds=8)], (), None),
        ([Listed("a", created_at=T0 - timedelta(seconds=1))], (), None),
        # A provider that does not echo a field does not rule the job out on it.
        ([Listed("a", width=None, height=None, seconds=None)], (), "a"),
        # Another request's job is never adopted.
        ([Listed("a")], ("a",), None),
        ([Listed("a"), Listed("b", created_at=T0 + timedelta(seconds=3))], ("a",), "b"),
        # Of several, the oldest: the first create is the lost one.
        (
            [Listed("b", created_at=T0 + timedelta(seconds=3)), Listed("a")],
            (),
            "a",
        ),
    ],
)
def test_a_lost_create_is_matched_on_what_the_request_sent(
    listed: list[Listed], taken: tuple[str, ...], adopted: str | None
) -> None:
    assert _match(listed, taken) == adopted


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.1.2.3:8443/hook",
        "https://169.254.169.254/latest",
        "https://localhost/hook",
        "https://api.localhost./hook",
        "https://user@[::1]:9000/hook",
        "https://[::ffff:192.168.0.1]/hook",
        "https://0.0.0.0/hook",
    ],
)
def test_a_callback_written_as_a_private_address_fails_the_request(url: str) -> None:
    refused = unsafe_callback(url)
    assert refused is not None and refused.reason_code == "unsafe_callback_url"
    assert url not in refused.message  # the URL may carry a token
    assert unsafe_callback(url, allow_private=True) is None


@pytest.mark.parametrize(
    "url",
    [
        None,
        "https://hooks.example.com/v1?sig=x",
        "https://8.8.8.8/hook",
        "https://[2001:4860::8888]/",
    ],
)
def test_a_public_or_named_callback_passes(url: str | None) -> None:
    assert unsafe_callback(url) is None
