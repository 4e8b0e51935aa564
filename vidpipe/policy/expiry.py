"""How long a provider keeps a finished video, and by when vidpipe must have fetched it.

Each provider deletes (or stops serving) a generated video after a while: Replicate an hour after
the prediction completes, the others after a day or two. When the provider states the expiry
(`expires_at` on the job) that is the end; when it does not, the documented lifetime in
`RESULT_LIFETIME`, counted from when the video was found finished, stands in. The fetch deadline
is that end less a safety margin (a tenth of the window, at most `MAX_MARGIN`): the redownloader's
last try and its `DownloadGaveUp` (on which failover acts) come before the URL dies, not after.
Pure: the time is a parameter.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["MAX_MARGIN", "RESULT_LIFETIME", "fetch_deadline", "result_end"]

#: How long each provider keeps a finished job's video when the job states no expiry.
RESULT_LIFETIME: dict[str, timedelta] = {
    # "Output files are deleted an hour after the prediction completes" (API predictions).
    "replicate": timedelta(hours=1),
    # Jobs and videos carry `expires_at`; about 24 h after completion when it is missing.
    "azure-sora": timedelta(hours=24),
    "openai-videos": timedelta(hours=24),
    # Veo: "generated videos are stored on the server for 2 days".
    "gemini": timedelta(hours=48),
    # Task output URLs are signed and expire within 24-48 h: the shorter end.
    "runway": timedelta(hours=24),
    # fal documents no expiry for its CDN URLs: assume a day rather than for ever.
    "fal": timedelta(hours=24),
}
#: The most the deadline is kept ahead of the end.
MAX_MARGIN = timedelta(minutes=5)


def result_end(
    provider: str, expires_at: datetime | None, finished_at: datetime
) -> datetime | None:
    """When the video stops being served: the job's own expiry, else the provider's lifetime
    from `finished_at`; None for a provider with neither (no deadline)."""
    if expires_at is not None:
        return expires_at
    lifetime = RESULT_LIFETIME.get(provider)
    return finished_at + lifetime if lifetime is not None else None


def fetch_deadline(
    provider: str, expires_at: datetime | None, finished_at: datetime
) -> datetime | None:
    """The last moment a fetch (or a retry of it) should start: the end less a margin of a
    tenth of the window from `finished_at`, at most `MAX_MARGIN`."""
    end = result_end(provider, expires_at, finished_at)
    if end is None:
        return None
    window = max(end - finished_at, timedelta(0))
    return end - min(MAX_MARGIN, window / 10)
