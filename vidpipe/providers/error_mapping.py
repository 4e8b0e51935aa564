"""How a provider's error answer becomes a vidpipe error, with messages safe to log.

Provider error bodies come in several shapes (OpenAI's `{"error": {...}}`, Azure's bare object,
fal's `{"detail": ...}`, gateways' plain text); `parse_error_body` reads them all,
`error_for_response` maps the status and code onto the `ProviderError` tree, and every quoted
message is truncated and scrubbed of secrets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from vidpipe.errors import (
    AuthenticationFailed,
    ContentPolicyViolation,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from vidpipe.net.retry import parse_retry_after

__all__ = [
    "ERROR_BODY_LIMIT",
    "MESSAGE_LIMIT",
    "ErrorBody",
    "describe",
    "error_for_response",
    "is_content_policy",
    "parse_error_body",
    "read_limited",
    "redact",
    "transport_error",
    "truncate",
]

#: Provider messages are quoted in our errors, but only this much of them.
MESSAGE_LIMIT = 300
#: Error bodies are small; a huge one is not worth holding in memory.
ERROR_BODY_LIMIT = 64 * 1024
# Provider codes that mean "moderation refused this", across Azure, OpenAI and gateways.
CONTENT_POLICY_CODES = frozenset(
    {
        "content_filter",
        "content_policy_violation",
        "moderation_blocked",
        "responsibleaipolicyviolation",
    }
)


def truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """One line, at most `limit` characters: provider messages can be whole HTML pages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Blank out any secret a provider echoed back (some echo part of a rejected key)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class ErrorBody:
    """The useful parts of a provider error body, whichever shape it came in."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    type: str | None = None
    inner_code: str | None = None


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def parse_error_body(content: bytes) -> ErrorBody:
    """Accept `{"error": {...}}` and the bare `{code, message, param, type, inner_error}`.

    Azure's docs do not settle which one Sora 1 sends, so both are read. A non-JSON body keeps its
    text as the message.
    """
    try:
        payload = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", errors="replace").strip()
        return ErrorBody(message=text or None)
    if not isinstance(payload, dict):
        return ErrorBody(message=_str_or_none(payload))
    detail = payload.get("detail")
    if detail is not None and "error" not in payload and "message" not in payload:
        return _detail_body(detail)
    inner = payload.get("error")
    if isinstance(inner, dict):
        payload = inner
    elif isinstance(inner, str) and "message" not in payload:
        # Some gateways send {"error": "text"}.
        return ErrorBody(message=inner)
    inner_error = payload.get("inner_error") or payload.get("innererror")
    inner_code = _str_or_none(inner_error.get("code")) if isinstance(inner_error, dict) else None
    return ErrorBody(
        code=_str_or_none(payload.get("code")),
        message=_str_or_none(payload.get("message")),
        param=_str_or_none(payload.get("param")),
        type=_str_or_none(payload.get("type")),
        inner_code=inner_code,
    )


def _detail_body(detail: Any) -> ErrorBody:
    """fal's (FastAPI's) `{"detail": "text"}` or `{"detail": [{"loc", "msg", "type"}, ...]}`:
    the first typed entry gives the code and message."""
    if isinstance(detail, list):
        first = next((d for d in detail if isinstance(d, dict)), None)
        if first is not None:
            return ErrorBody(
                code=_str_or_none(first.get("type")), message=_str_or_none(first.get("msg"))
            )
    return ErrorBody(message=_str_or_none(detail))


def is_content_policy(body: ErrorBody) -> bool:
    codes = {c.lower() for c in (body.code, body.inner_code, body.type) if c}
    return bool(codes & CONTENT_POLICY_CODES)


def describe(
    provider: str, action: str, status: int | None, body: ErrorBody, secrets: Iterable[str]
) -> str:
    """`provider action: HTTP 429 (code=x): message`, truncated and scrubbed of secrets."""
    secrets = tuple(secrets)
    head = f"{provider} {action}: HTTP {status}" if status is not None else f"{provider} {action}"
    code = body.inner_code or body.code
    if code:
        head += f" (code={truncate(redact(code, secrets), 80)})"
    if body.message:
        head += f": {truncate(redact(body.message, secrets))}"
    return head


def error_for_response(
    provider: str,
    action: str,
    response: httpx.Response,
    content: bytes,
    *,
    secrets: Iterable[str],
) -> ProviderError:
    """Map a non-2xx answer to the vidpipe hierarchy; messages never carry credentials."""
    status = response.status_code
    body = parse_error_body(content)
    secrets = tuple(secrets)
    message = describe(provider, action, status, body, secrets)
    provider_code = body.inner_code or body.code
    if provider_code:
        provider_code = truncate(redact(provider_code, secrets), 80)
    kwargs: dict[str, Any] = {"status_code": status, "provider_code": provider_code}
    if status == 429:
        return RateLimited(message, retry_after=parse_retry_after(response.headers), **kwargs)
    if status >= 500 or status == 408:
        return ProviderUnavailable(
            message, retry_after=parse_retry_after(response.headers), **kwargs
        )
    if is_content_policy(body):
        return ContentPolicyViolation(message, **kwargs)
    if status in (401, 403):
        return AuthenticationFailed(message, **kwargs)
    if status in (404, 410):
        return NotFound(message, **kwargs)
    # 400/409/422 and any other 4xx (or an unexpected 3xx): the same call will fail again.
    return InvalidRequest(message, **kwargs)


def transport_error(provider: str, action: str, exc: httpx.HTTPError) -> ProviderUnavailable:
    """Timeouts and connection failures; the exception type says enough, its text may hold URLs."""
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "transport error"
    return ProviderUnavailable(f"{provider} {action}: {kind} ({type(exc).__name__})")


async def read_limited(response: httpx.Response, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """Read at most `limit` bytes of a streamed response (error bodies only)."""
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf.extend(chunk)
        if len(buf) >= limit:
            break
    return bytes(buf[:limit])
