"""Streaming a generated video off a provider: redirects by hand, and only real-looking videos.

Providers often answer a download with a redirect to a pre-signed blob URL, and sometimes with a
200 that is really a JSON error. `stream_video` follows redirects itself so credentials go only to
the origin they were configured for, and hands back a stream only when the answer looks like a
video (the bytes are checked again, ftyp box and all, before anything is stored).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import httpx

from vidpipe.errors import DownloadNotAvailable, InvalidVideo
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
# (httpx strips only Authorization, which would leak an `api-key` header to e.g. a blob store).
AUTH_HEADERS = ("authorization", "api-key")
# Storage hosts behind a redirect often say octet-stream for MP4.
_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/mp4"})


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
