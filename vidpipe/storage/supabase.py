"""Videos in a Supabase Storage bucket, through its REST API (storage-api), on plain httpx."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from vidpipe.errors import ConfigurationError, InvalidVideo, StorageError
from vidpipe.storage.base import WRITE_BATCH, StoredObject, validate_key, validated_copy
from vidpipe.storage.validation import (
    Mp4StreamValidator,
    check_content_type,
    check_playable,
    content_type_for_brand,
)

__all__ = ["DEFAULT_BUCKET", "SupabaseStorage"]

DEFAULT_BUCKET = "output-videos"
# SpooledTemporaryFile keeps this much in memory before it rolls over to disk.
_SPOOL_MEMORY = 1024 * 1024
_BUCKET_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")


class SupabaseStorage:
    """Videos in a Supabase Storage bucket, through its REST API.

    The upload needs the whole body, and validation must finish before anything is sent, so the
    download is spooled to a temp file (memory up to 1 MiB, then disk), decoded by PyAV there
    (`check_playable`), and streamed from there.
    sha256 and size travel as the object's user metadata (`x-metadata`), which `stat` reads back.
    """

    def __init__(
        self,
        url: str,
        service_key: SecretStr,
        bucket: str = DEFAULT_BUCKET,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        if not _BUCKET_RE.fullmatch(bucket):
            raise ConfigurationError("Supabase bucket name must be 1-100 of [A-Za-z0-9._-]")
        self.base_url = url.rstrip("/")
        self.bucket = bucket
        self._key = service_key
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=30.0),
            follow_redirects=False,
        )

    def _auth_headers(self) -> dict[str, str]:
        secret = self._key.get_secret_value()
        # The API gateway wants `apikey`; storage-api itself reads the bearer token.
        return {"Authorization": f"Bearer {secret}", "apikey": secret}

    def _object_path(self, key: str) -> str:
        return f"{quote(self.bucket, safe='')}/{quote(validate_key(key), safe='/')}"

    def url_for(self, key: str) -> str:
        return f"{self.base_url}/storage/v1/object/public/{self._object_path(key)}"

    def _scrub(self, text: str) -> str:
        secret = self._key.get_secret_value()
        return text.replace(secret, "***") if secret else text

    def _error(self, action: str, response: httpx.Response) -> StorageError:
        detail = ""
        with contextlib.suppress(ValueError):
            body = response.json()
            if isinstance(body, dict):
                code = body.get("error") or body.get("code") or ""
                message = body.get("message") or ""
                detail = self._scrub(f" ({code}: {message})"[:200]) if code or message else ""
        status = response.status_code
        return StorageError(
            f"Supabase Storage {action} failed: HTTP {status}{detail}",
            retryable=status == 429 or status >= 500,
            status_code=status,
        )

    def _transport_error(self, action: str, exc: httpx.HTTPError) -> StorageError:
        # Only the class name: an httpx message may carry the URL, and we keep it minimal.
        return StorageError(
            f"Supabase Storage {action} failed: {type(exc).__name__}", retryable=True
        )

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        max_bytes: int,
        expected_length: int | None = None,
        expected_seconds: float | None = None,
    ) -> StoredObject:
        check_content_type(content_type)
        path = self._object_path(key)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) as spool:
            video = await validated_copy(
                chunks, spool, max_bytes=max_bytes, expected_length=expected_length
            )
            # The whole file, decoded, before a byte is uploaded.
            await asyncio.to_thread(spool.seek, 0)
            await check_playable(spool, expected_seconds=expected_seconds)
            await asyncio.to_thread(spool.seek, 0)
            stored_type = content_type_for_brand(video.major_brand)
            metadata = json.dumps({"sha256": video.sha256, "size_bytes": video.size_bytes})
            headers = {
                **self._auth_headers(),
                "Content-Type": stored_type,
                "Content-Length": str(video.size_bytes),
                "x-upsert": "true",
                "cache-control": "max-age=3600",
                "x-metadata": base64.b64encode(metadata.encode()).decode("ascii"),
            }
            try:
                response = await self._client.post(
                    f"{self.base_url}/storage/v1/object/{path}",
                    headers=headers,
                    content=_read_blocks(spool),
                )
            except httpx.HTTPError as exc:
                raise self._transport_error("upload", exc) from None
        if not response.is_success:
            raise self._error("upload", response)
        return StoredObject(
            key=key,
            url=self.url_for(key),
            size_bytes=video.size_bytes,
            sha256=video.sha256,
            content_type=stored_type,
        )

    async def stat(self, key: str) -> StoredObject | None:
        path = self._object_path(key)
        try:
            response = await self._client.get(
                f"{self.base_url}/storage/v1/object/info/authenticated/{path}",
                headers=self._auth_headers(),
            )
        except httpx.HTTPError as exc:
            raise self._transport_error("stat", exc) from None
        if _is_not_found(response):
            return None
        if not response.is_success:
            raise self._error("stat", response)
        info: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            body = response.json()
            if isinstance(body, dict):
                info = body
        raw_meta = info.get("metadata")
        user_meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        size, sha256 = info.get("size"), user_meta.get("sha256")
        content_type = info.get("content_type")
        if (
            isinstance(size, int)
            and isinstance(sha256, str)
            and user_meta.get("size_bytes") == size
            and isinstance(content_type, str)
        ):
            return StoredObject(
                key=key,
                url=self.url_for(key),
                size_bytes=size,
                sha256=sha256,
                content_type=content_type,
            )
        # Uploaded by something else (or an older server without user metadata): hash it.
        return await self._hash_remote(key, path)

    async def _hash_remote(self, key: str, path: str) -> StoredObject | None:
        validator = Mp4StreamValidator(max_bytes=2**62)
        try:
            async with self._client.stream(
                "GET",
                f"{self.base_url}/storage/v1/object/authenticated/{path}",
                headers=self._auth_headers(),
            ) as response:
                if _is_not_found(response):
                    return None
                if not response.is_success:
                    await response.aread()
                    raise self._error("download", response)
                async for chunk in response.aiter_bytes():
                    validator.feed(chunk)  # stops at the first bytes that are not a video
            video = validator.finish()
        except httpx.HTTPError as exc:
            raise self._transport_error("download", exc) from None
        except InvalidVideo:
            return None  # not a video: treat the key as free so a real one replaces it
        return StoredObject(
            key=key,
            url=self.url_for(key),
            size_bytes=video.size_bytes,
            sha256=video.sha256,
            content_type=video.content_type,
        )

    async def open_local(self, key: str) -> Path | None:
        return None

    async def aclose(self) -> None:
        await self._client.aclose()


async def _read_blocks(file: IO[bytes]) -> AsyncIterator[bytes]:
    while block := await asyncio.to_thread(file.read, WRITE_BATCH):
        yield block


def _is_not_found(response: httpx.Response) -> bool:
    if response.status_code == 404:
        return True
    # Older storage-api versions answer a missing object with 400 and {"statusCode": "404"}.
    if response.status_code == 400:
        with contextlib.suppress(ValueError):
            body = response.json()
            return isinstance(body, dict) and str(body.get("statusCode")) == "404"
    return False
