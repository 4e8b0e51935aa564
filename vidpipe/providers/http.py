"""The HTTP client a provider client talks through, and one API call on it.

Kept deliberately small and on plain httpx: SDK renames once broke downloads of paid-for videos,
so the wire contract lives in vidpipe, where the tests can see it. Error answers are mapped in
`error_mapping`, video downloads streamed in `download`, job objects read in `jobs`; retries are
`vidpipe.net.retry`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import Span

from vidpipe.errors import ConfigurationError, InvalidRequest, ProviderError
from vidpipe.logs import redact_url
from vidpipe.metrics import current as current_metrics
from vidpipe.providers.error_mapping import (
    ERROR_BODY_LIMIT,
    error_for_response,
    transport_error,
    truncate,
)

__all__ = [
    "USER_AGENT",
    "build_async_client",
    "check_base_url",
    "endpoint_host",
    "multipart_parts",
    "path_segment",
    "request",
    "traced",
]

USER_AGENT = "vidpipe/0.1"


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
    """One AsyncClient per provider client; `transport` lets tests and the emulator plug in.
    Every call is a client span of the current trace (`traced`)."""
    client = httpx.AsyncClient(
        base_url=base_url,
        headers={"User-Agent": USER_AGENT, **headers},
        params=dict(params or {}),
        transport=_Unpropagated(transport or httpx.AsyncHTTPTransport()),
        timeout=httpx.Timeout(timeout_s),
        # Redirects are followed by hand in download.stream_video, so credentials never cross
        # origins.
        follow_redirects=False,
        trust_env=False,  # no ambient proxy/netrc surprises: behaviour comes from settings only
    )
    return traced(client)


#: The trace context headers OpenTelemetry adds to every request of a traced client.
_PROPAGATION_HEADERS = ("traceparent", "tracestate", "baggage")


class _Unpropagated(httpx.AsyncBaseTransport):
    """Sends requests without the trace context: a provider is a third party, and W3C Trace
    Context leaves it to the caller not to tell one its trace ids. The span stays ours: the
    instrumentation wraps this transport, so the headers are dropped after it added them."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for name in _PROPAGATION_HEADERS:
            if name in request.headers:
                del request.headers[name]
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _url_without_secrets(span: Span, request: Any) -> None:
    # Async: an AsyncClient's transport calls only async hooks.
    # OpenTelemetry's own redaction keeps most of a query string; a signed download URL (a SAS
    # token, `?sig=`) carries its signature there, so spans get what the logs get.
    url = redact_url(str(request.url))
    for attribute in ("url.full", "http.url"):
        span.set_attribute(attribute, url)


def traced(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """`client`, each of its requests a child span (OpenTelemetry's httpx instrumentation)
    whose URL attributes have no user info, query string or fragment; no headers are recorded.
    A no-op tracer while tracing is off."""
    HTTPXClientInstrumentor.instrument_client(client, request_hook=_url_without_secrets)
    return client


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
    started = time.monotonic()
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        current_metrics().provider_call(
            provider, action, "transport_error", time.monotonic() - started
        )
        raise transport_error(provider, action, exc) from exc
    current_metrics().provider_call(
        provider, action, response.status_code, time.monotonic() - started
    )
    if response.is_success:
        return response
    content = response.content[:ERROR_BODY_LIMIT]
    special = map_error(response, content) if map_error is not None else None
    raise special or error_for_response(provider, action, response, content, secrets=secrets)
