"""Streaming a generated video off a provider: redirects by hand, and only real-looking videos.

Providers often answer a download with a redirect to a pre-signed blob URL, and sometimes with a
200 that is really a JSON error. `stream_video` follows redirects itself so credentials go only to
the origin they were configured for, and hands back a stream only when the answer looks like a
video (the bytes are checked again, box structure and a decode, before anything is stored).

Redirects and the SSRF guard (the rule docs/providers.md states):
- a hop to the configured endpoint's own origin (scheme, host, port) is followed as is: that is
  the server the operator configured (the emulator on loopback, in tests);
- a hop anywhere else is vetted like a user-supplied URL (`vidpipe.net.guard.resolve_safe`):
  https only, every address the host resolves to public (no loopback, private, CGNAT,
  link-local/metadata, ...), and the connection is pinned to the vetted address (no DNS
  rebinding). With `VIDPIPE_ALLOW_PRIVATE_URLS=true` (development only) such a hop may also be
  http and reach loopback or private addresses, never link-local/metadata ones;
- a refused hop is `DownloadNotAvailable` (terminal), before a byte is sent there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import httpx

from vidpipe.errors import DownloadNotAvailable, InvalidVideo, UnsafeURLError
from vidpipe.net.guard import Resolver, resolve_safe
from vidpipe.providers.base import VideoDownload
from vidpipe.providers.error_mapping import (
    describe,
    error_for_response,
    parse_error_body,
    read_limited,
    transport_error,
    truncate,
)

__all__ = ["MAX_REDIRECTS", "stream_video"]

MAX_REDIRECTS = 5
# Headers that carry credentials; dropped when a download redirects to another origin
# (httpx strips only Authorization, which would leak an `api-key` header to e.g. a blob store;
# the Gemini API's key travels as `x-goog-api-key`).
AUTH_HEADERS = ("authorization", "api-key", "x-goog-api-key")
# Storage hosts behind a redirect often say octet-stream for MP4.
_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/mp4"})


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port or _port(a)) == (b.scheme, b.host, b.port or _port(b))


def _port(url: httpx.URL) -> int | None:
    return {"http": 80, "https": 443}.get(url.scheme)


async def _redirect_request(
    endpoint: httpx.URL,
    target: httpx.URL,
    headers: httpx.Headers,
    extensions: dict[str, object],
    *,
    provider: str,
    action: str,
    allow_private: bool,
    resolver: Resolver | None,
) -> httpx.Request:
    """The request for one redirect hop, vetted by the rule in the module doc."""
    if _same_origin(endpoint, target):
        return httpx.Request("GET", target, headers=headers, extensions=extensions)
    try:
        safe = await resolve_safe(str(target), allow_private=allow_private, resolver=resolver)
    except UnsafeURLError as exc:
        # The reason names the host at most, never the query (a signed URL's token).
        raise DownloadNotAvailable(f"{provider} {action}: redirect refused: {exc}") from None
    return safe.pinned_request("GET", headers=headers, extensions=extensions)


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
    allow_private: bool = False,
    resolver: Resolver | None = None,
    endpoint: str | None = None,
) -> AsyncIterator[VideoDownload]:
    """GET a video, streamed, yielding only a real-looking video response.

    404/410 → DownloadNotAvailable; 5xx/timeouts → ProviderUnavailable (the caller retries the
    download alone, never the job); a 200 that is not video/* → InvalidVideo, so a JSON error body
    is never stored as an .mp4. Redirects are followed by hand: credentials go only to the origin
    they were configured for, and a hop elsewhere passes the SSRF guard (module doc);
    `allow_private` is the client's VIDPIPE_ALLOW_PRIVATE_URLS; `resolver`, the system's if None.

    `endpoint`: the configured API origin, for a `url` the provider handed over in a body (fal's
    and Replicate's output URLs on their CDNs): on another origin, the first request is vetted and
    stripped of credentials exactly like a redirect hop.
    """
    secrets = tuple(secrets)
    async with AsyncExitStack() as stack:
        req = client.build_request("GET", url, params=params)
        # The configured endpoint: the one origin trusted as is.
        trusted = httpx.URL(endpoint) if endpoint is not None else req.url
        # The URL as the provider wrote it: a pinned hop's request names the IP instead.
        current = req.url
        if not _same_origin(trusted, current):
            headers = httpx.Headers(req.headers)
            headers.pop("host", None)
            for name in AUTH_HEADERS:
                headers.pop(name, None)
            req = await _redirect_request(
                trusted,
                current,
                headers,
                {"timeout": client.timeout.as_dict()},
                provider=provider,
                action=action,
                allow_private=allow_private,
                resolver=resolver,
            )
        response: httpx.Response | None = None
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await client.send(req, stream=True, follow_redirects=False)
            except httpx.TransportError as exc:
                raise transport_error(provider, action, exc) from exc
            stack.push_async_callback(response.aclose)
            if not (follow_redirects and response.is_redirect):
                break
            target = current.join(response.headers["location"])
            headers = httpx.Headers(req.headers)
            headers.pop("host", None)
            if not _same_origin(current, target):
                for name in AUTH_HEADERS:
                    headers.pop(name, None)
            await response.aclose()
            # A fresh Request, not build_request: the client's default query (api-version) must
            # not be appended to a pre-signed storage URL.
            req = await _redirect_request(
                trusted,
                target,
                headers,
                {"timeout": client.timeout.as_dict()},
                provider=provider,
                action=action,
                allow_private=allow_private,
                resolver=resolver,
            )
            current = target
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
        # The ftyp check comes later, so only clearly-not-video types stop here.
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
