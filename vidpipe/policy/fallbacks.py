"""Which fallbacks run for a request whose video cannot be downloaded, and when failover acts.

The request's `fallbacks` field decides; when it is null, the configured default does
(VIDPIPE_DEFAULT_FALLBACKS, comma-separated). Each fallback subscriber asks `applies()` and
ignores, with a log line, the events its policy excludes. `failover_acts()` is the failover
stage's timing rule and `pursues_real_video()` says whether anything still goes after the real
video once it was found unavailable; together they make every policy end (docs/guarantees.md,
"Every fallback policy ends").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from schemas.events import FallbackName, RequestSnapshot

__all__ = [
    "ALL_FALLBACKS",
    "FailoverTiming",
    "FailoverTrigger",
    "applies",
    "failover_acts",
    "parse_fallbacks",
    "policy",
    "pursues_real_video",
]

ALL_FALLBACKS: tuple[FallbackName, ...] = ("placeholder", "notify", "retry", "failover")

#: VIDPIPE_FAILOVER_WHEN.
FailoverTiming = Literal["immediate", "after_retry"]
#: What reached the failover stage: a `DownloadUnavailable` or a `DownloadGaveUp`.
FailoverTrigger = Literal["unavailable", "gave_up"]


def parse_fallbacks(text: str) -> list[FallbackName]:
    """'placeholder, notify' -> ['placeholder', 'notify']; unknown names are an error."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in ALL_FALLBACKS]
    if unknown:
        raise ValueError(f"unknown fallbacks {unknown}; choose from {', '.join(ALL_FALLBACKS)}")
    return [n for n in ALL_FALLBACKS if n in names]


def policy(request: RequestSnapshot | None, default: list[FallbackName]) -> list[FallbackName]:
    if request is not None and request.fallbacks is not None:
        return list(request.fallbacks)
    return list(default)


def applies(
    name: FallbackName, request: RequestSnapshot | None, default: list[FallbackName]
) -> bool:
    return name in policy(request, default)


def failover_acts(fallbacks: Sequence[FallbackName], when: str, trigger: FailoverTrigger) -> bool:
    """Whether the failover stage resubmits on this trigger, for this policy and timing.

    `after_retry` waits for the redownloader's `DownloadGaveUp` only when the policy retries:
    without `retry` no `DownloadGaveUp` ever comes, so failover acts on `DownloadUnavailable`
    at once, as with `immediate`. Exactly one of the two triggers is the one for a policy.
    """
    if "failover" not in fallbacks:
        return False
    waits_for_retry = when == "after_retry" and "retry" in fallbacks
    return waits_for_retry if trigger == "gave_up" else not waits_for_retry


def pursues_real_video(fallbacks: Sequence[FallbackName]) -> bool:
    """After a `DownloadUnavailable`, does anything still go after the real video?

    Only `retry` (the redownloader) and `failover` (another provider) do; `placeholder` and
    `notify` stand in for it or tell about it. When neither is in the policy the request is
    given up at once (the redownloader publishes `DownloadGaveUp` with no attempts).
    """
    return "retry" in fallbacks or "failover" in fallbacks
