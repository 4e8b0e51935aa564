"""Shared HTTP plumbing for the provider clients: clients, error mapping, retries, downloads.

Kept deliberately small and on plain httpx: SDK renames once broke downloads of paid-for videos,
so the wire contract lives here, where the tests can see it.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter

from vidpipe.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ContentPolicyViolation,
    DownloadNotAvailable,
    InvalidRequest,
    InvalidVideo,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RetryableProviderError,
    TerminalProviderError,
)
from vidpipe.providers.base import VideoDownload

__all__ = [
    "NO_RETRY",
    "USER_AGENT",
    "ErrorBody",
    "RetryPolicy",
    "build_async_client",
    "check_base_url",
    "describe",
    "endpoint_host",
    "error_for_response",
    "is_content_policy",
    "multipart_parts",
    "parse_error_body",
    "parse_retry_after",
    "path_segment",
    "read_limited",
    "redact",
    "request",
    "stream_video",
    "transport_error",
    "truncate",
    "unix_to_datetime",
]

USER_AGENT = "vidpipe/0.1"
#: Provider messages are quoted in our errors, but only this much of them.
MESSAGE_LIMIT = 300
#: Error bodies are small; a huge one is not worth holding in memory.
ERROR_BODY_LIMIT = 64 * 1024
MAX_REDIRECTS = 5
# Headers that carry credentials; dropped when a download redirects to another origin
# (httpx strips only Authorization, which would leak an `api-key` header to e.g. a blob store).
AUTH_HEADERS = ("authorization", "api-key")
# Provider codes that mean "moderation refused this", across Azure, OpenAI and gateways.
CONTENT_POLICY_CODES = frozenset(
    {
        "content_filter",
        "content_policy_violation",
        "moderation_blocked",
        "responsibleaipolicyviolation",
    }
)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


# --- small helpers ---------------------------------------------------------------------------


_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/mp4"})


def endpoint_host(url: str) -> str:
    """hostname[:port] of `url`: no scheme, path, query or userinfo, so safe for events and logs."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ConfigurationError(f"not an absolute URL (no host): {parts.scheme or '?'}://…")
    if ":" in host:  # IPv6 literal: keep it unambiguous next to a port
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port is not None else host


def check_base_url(url: str, *, setting: str) -> str:
    """Reject a base URL that cannot work, naming the setting; returns it minus a trailing /."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{setting} must be an http(s) URL with a host")
    if parts.username or parts.password:
        # Credentials in the URL would end up in logs and events; keys go in their own setting.
        raise ConfigurationError(f"{setting} must not contain credentials")
    return url.rstrip("/")


def path_segment(provider: str, value: str) -> str:
    """An id as one path segment: a stray '/' or '?' must not change which route we call."""
    if not value or value in (".", "..") or any(c in value for c in "/?#%\\"):
        raise InvalidRequest(f"{provider}: unusable id {truncate(value, 80)!r}")
    return value


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


def multipart_parts(
    fields: Mapping[str, str], files: Iterable[tuple[str, tuple[str, bytes, str]]] = ()
) -> list[tuple[str, tuple[str | None, bytes] | tuple[str, bytes, str]]]:
    """A `files=` list for httpx that always encodes multipart/form-data.

    httpx sends `data=` alone as urlencoded; plain fields given as (None, value) file entries
    become ordinary form fields, so the body is multipart even without an upload.
    """
    parts: list[tuple[str, tuple[str | None, bytes] | tuple[str, bytes, str]]] = [
        (name, (None, value.encode())) for name, value in fields.items()
    ]
    parts.extend(files)
    return parts


def build_async_client(
    base_url: str,
    *,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = 30.0,
) -> httpx.AsyncClient:
    """One AsyncClient per provider client; `transport` lets tests and the emulator plug in."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"User-Agent": USER_AGENT, **headers},
        params=dict(params or {}),
        transport=transport,
        timeout=httpx.Timeout(timeout_s),
        # Redirects are followed by hand in stream_video, so credentials never cross origins.
        follow_redirects=False,
        trust_env=False,  # no ambient proxy/netrc surprises: behaviour comes from settings only
    )


# --- error bodies and status mapping ---------------------------------------------------------


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


def parse_retry_after(headers: httpx.Headers, *, now: datetime | None = None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `retry-after` (secs or date)."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = headers.get(name)
        if raw is not None:
            try:
                millis = float(raw)
            except ValueError:
                continue
            if math.isfinite(millis) and millis >= 0:
                return millis / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT by definition
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, delta)


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


# --- retries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Retry RetryableProviderError only, with jittered exponential backoff.

    The server's retry-after hint wins over the backoff. Attempts are bounded, and so is the
    total time spent sleeping: when the next wait would pass `max_total_wait_s` the last error is
    raised as is (with its `retry_after`), so the pipeline can reschedule instead of blocking.
    `sleep` is injectable so tests can record waits instead of taking them.
    """

    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0
    max_total_wait_s: float = 30.0
    sleep: Sleep = field(default=asyncio.sleep, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        backoff = wait_exponential_jitter(
            multiplier=self.base_delay_s, max=self.max_delay_s, jitter=self.base_delay_s
        )
        return float(backoff(state))

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.attempts:
            return True
        return state.idle_for + state.upcoming_sleep > self.max_total_wait_s

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            sleep=self.sleep,
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception_type(RetryableProviderError),
            reraise=True,  # callers see RateLimited/ProviderUnavailable, not tenacity's RetryError
        )
        return await retrying(fn)


NO_RETRY = RetryPolicy(attempts=1)


# --- requests and downloads ------------------------------------------------------------------


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    action: str,
    secrets: Iterable[str],
    map_error: Callable[[httpx.Response, bytes], ProviderError | None] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One API call: transport failures and non-2xx answers become vidpipe errors.

    `map_error` lets a client claim a provider-specific case first (e.g. a wrong deployment).
    """
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise transport_error(provider, action, exc) from exc
    if response.is_success:
        return response
    content = response.content[:ERROR_BODY_LIMIT]
    special = map_error(response, content) if map_error is not None else None
    raise special or error_for_response(provider, action, response, content, secrets=secrets)


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


async def _guarded_chunks(
    response: httpx.Response, provider: str, action: str
) -> AsyncIterator[bytes]:
    """The body as chunks; a connection dropped mid-stream is a retryable download failure."""
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.TransportError as exc:
        raise transport_error(provider, action, exc) from exc


@asynccontextmanager
async def stream_video(
    client: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    action: str,
    secrets: Iterable[str],
    params: Mapping[str, str] | None = None,
    follow_redirects: bool = True,
) -> AsyncIterator[VideoDownload]:
    """GET a video, streamed, yielding only a real-looking video response.

    404/410 → DownloadNotAvailable; 5xx/timeouts → ProviderUnavailable (the caller retries the
    download alone, never the job); a 200 that is not video/* → InvalidVideo, so a JSON error body
    is never stored as an .mp4. Redirects are followed by hand: credentials go only to the origin
    they were configured for.
    """
    secrets = tuple(secrets)
    async with AsyncExitStack() as stack:
        req = client.build_request("GET", url, params=params)
        response: httpx.Response | None = None
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await client.send(req, stream=True, follow_redirects=False)
            except httpx.TransportError as exc:
                raise transport_error(provider, action, exc) from exc
            stack.push_async_callback(response.aclose)
            if not (follow_redirects and response.is_redirect):
                break
            target = req.url.join(response.headers["location"])
            headers = httpx.Headers(req.headers)
            headers.pop("host", None)
            if not _same_origin(req.url, target):
                for name in AUTH_HEADERS:
                    headers.pop(name, None)
            # A fresh Request, not build_request: the client's default query (api-version) must
            # not be appended to a pre-signed storage URL.
            req = httpx.Request(
                "GET", target, headers=headers, extensions={"timeout": client.timeout.as_dict()}
            )
            await response.aclose()
        else:
            raise DownloadNotAvailable(
                f"{provider} {action}: more than {MAX_REDIRECTS} redirects",
                status_code=response.status_code if response is not None else None,
            )
        assert response is not None
        status = response.status_code
        if status >= 300:
            content = await read_limited(response)
            if status in (404, 410):
                body = parse_error_body(content)
                raise DownloadNotAvailable(
                    describe(provider, action, status, body, secrets),
                    status_code=status,
                    provider_code=body.inner_code or body.code,
                )
            raise error_for_response(provider, action, response, content, secrets=secrets)
        content_type = response.headers.get("content-type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        # Storage hosts behind a redirect often say octet-stream for MP4; the bytes are still
        # checked (ftyp box) before anything is stored, so only clearly-not-video types stop here.
        if status != 200 or not (media_type.startswith("video/") or media_type in _BINARY_TYPES):
            raise InvalidVideo(
                f"{provider} {action}: HTTP {status} with content-type "
                f"{truncate(media_type or 'none', 80)!r}, not a video",
                status_code=status,
            )
        length = response.headers.get("content-length")
        yield VideoDownload(
            status_code=status,
            content_type=content_type,
            content_length=int(length) if length and length.isdigit() else None,
            chunks=_guarded_chunks(response, provider, action),
        )


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
