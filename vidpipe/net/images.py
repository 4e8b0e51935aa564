"""The one way vidpipe fetches a user-supplied input image: through the SSRF guard, bounded.

The submitter sends the image to the provider and the placeholder pans over it; both call an
`InputImageFetcher`, so an image is refused or accepted the same way whoever fetches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import httpx

from vidpipe.net.guard import Resolver, fetch_bounded

__all__ = ["InputImage", "InputImageFetcher"]

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class InputImage:
    data: bytes
    content_type: str  # image/jpeg, image/png or image/webp
    filename: str = "input.png"


class InputImageFetcher:
    """Fetches input images over one pooled client, which `aclose()` closes.

    Raises `UnsafeURLError` for where a URL points and `InputFetchError` (with `retryable`) for
    what it serves.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        allow_private: bool = False,
        timeout_s: float = 30.0,
        resolver: Resolver | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._allow_private = allow_private
        self._timeout_s = timeout_s
        self._resolver = resolver
        self._owns_client = client is None
        # Redirects are followed by the guard itself, hop by hop, each hop vetted.
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def __call__(self, url: str) -> InputImage:
        data, content_type = await fetch_bounded(
            url,
            client=self._client,
            max_bytes=self._max_bytes,
            allow_private=self._allow_private,
            timeout_s=self._timeout_s,
            resolver=self._resolver,
        )
        extension = _EXTENSIONS.get(content_type, "png")
        return InputImage(data=data, content_type=content_type, filename=f"input.{extension}")

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()
