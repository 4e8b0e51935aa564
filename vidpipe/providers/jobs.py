"""Reading a job object out of a provider's 2xx answer: its shape, and its timestamps."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import httpx

from vidpipe.errors import ProviderUnavailable, TerminalProviderError

__all__ = ["job_object", "unix_to_datetime"]


def job_object(
    response: httpx.Response, provider: str, action: str, what: str, *, malformed_retryable: bool
) -> dict[str, Any]:
    """The job object of a 2xx answer, or an error when the body is not one."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not data.get("id") or not data.get("status"):
        message = f"{provider} {action}: HTTP {response.status_code} without a {what} object"
        # A garbled status answer is worth another look; a garbled create answer is not
        # retried, as the job may exist and a resubmit would pay twice.
        if malformed_retryable:
            raise ProviderUnavailable(message, status_code=response.status_code)
        raise TerminalProviderError(message, status_code=response.status_code)
    return data


def unix_to_datetime(value: Any) -> datetime | None:
    """Unix seconds (int, float or numeric string) → aware UTC datetime; anything else → None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(seconds):
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)
