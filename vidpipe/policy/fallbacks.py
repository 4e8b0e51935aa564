"""Which fallbacks run for a request whose video cannot be downloaded.

The request's `fallbacks` field decides; when it is null, the configured default does
(VIDPIPE_DEFAULT_FALLBACKS, comma-separated). Each fallback subscriber asks `applies()` and
ignores, with a log line, the events its policy excludes.
"""

from __future__ import annotations

from schemas.events import FallbackName, RequestSnapshot

__all__ = ["ALL_FALLBACKS", "applies", "parse_fallbacks", "policy"]

ALL_FALLBACKS: tuple[FallbackName, ...] = ("placeholder", "notify", "retry", "failover")


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
