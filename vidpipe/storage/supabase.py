"""Videos in a Supabase Storage bucket, on the official `supabase` client's storage (storage3).

The client does what it does well: the upload with upsert and user metadata, object info,
signed URLs, removal. Videos above `tus_threshold_bytes` (Supabase recommends its resumable
upload above 6 MB) go through the TUS endpoint (`/storage/v1/upload/resumable`) instead, in
6 MiB chunks, resumed from the server's offset (HEAD) after a cut connection; storage3 has no
TUS client, and the protocol's three requests are all it takes.
"""

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
from storage3 import AsyncStorageClient
from storage3.exceptions import StorageApiError

from vidpipe.errors import ConfigurationError, InvalidVideo, StorageError
from vidpipe.storage.base import WRITE_BATCH, StoredObject, validate_key, validated_copy
from vidpipe.storage.validation import (
    Mp4StreamValidator,
    check_content_type,
    check_playable,
    content_type_for_brand,
)

__all__ = ["DEFAULT_BUCKET", "TUS_CHUNK_BYTES", "TUS_THRESHOLD_BYTES", "SupabaseStorage"]

DEFAULT_BUCKET = "output-videos"
#: Supabase's guide: the standard upload up to 6 MB, the resumable (TUS) one above.
TUS_THRESHOLD_BYTES = 6 * 1024 * 1024
#: Supabase's TUS server takes chunks of exactly 6 MiB (the last may be shorter).
TUS_CHUNK_BYTES = 6 * 1024 * 1024
_TUS_ATTEMPTS = 5
_BUCKET_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")


class SupabaseStorage:
    """Videos in a Supabase Storage bucket.

    Validation must finish before anything is sent, so the download is copied to a temp file,
    decoded by PyAV there (`check_playable`), and uploaded from there: memory stays flat, the
    upload reads the file in blocks. sha256 and size travel as the object's user metadata,
    which `stat` reads back, so a redelivered event finds the same video and upserts nothing
    new. Uploads always upsert: the real video replaces a placeholder at the same key.

    `public`: the bucket is public and `StoredObject.url` is the object's public URL; else the
    URL is a signed one valid for `signed_url_ttl_s` (`url_for` is then the authenticated
    object URL, which needs the service key).
    """

    def __init__(
        self,
        url: str,
        service_key: SecretStr,
        bucket: str = DEFAULT_BUCKET,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 300.0,
        public: bool = True,
        signed_url_ttl_s: int = 7 * 24 * 3600,
        tus_threshold_bytes: int = TUS_THRESHOLD_BYTES,
        tus_chunk_bytes: int = TUS_CHUNK_BYTES,
    ) -> None:
        if not _BUCKET_RE.fullmatch(bucket):
            raise ConfigurationError("Supabase bucket name must be 1-100 of [A-Za-z0-9._-]")
        if signed_url_ttl_s < 1:
            raise ConfigurationError("the signed-URL lifetime must be at least 1 s")
        self.base_url = url.rstrip("/")
        self.bucket = bucket
        self.public = public
        self.signed_url_ttl_s = signed_url_ttl_s
        self.tus_threshold_bytes = tus_threshold_bytes
        self.tus_chunk_bytes = tus_chunk_bytes
        self._key = service_key
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=30.0),
            follow_redirects=False,
        )
        self._storage = AsyncStorageClient(
            f"{self.base_url}/storage/v1/", self._auth_headers(), http_client=self._client
        )

    def _auth_headers(self) -> dict[str, str]:
        secret = self._key.get_secret_value()
        # The API gateway wants `apikey`; storage-api itself reads the bearer token.
        return {"Authorization": f"Bearer {secret}", "apikey": secret}

    def _object_path(self, key: str) -> str:
        return f"{quote(self.bucket, safe='')}/{quote(validate_key(key), safe='/')}"

    def url_for(self, key: str) -> str:
        kind = "public" if self.public else "authenticated"
        return f"{self.base_url}/storage/v1/object/{kind}/{self._object_path(key)}"

    async def _viewer_url(self, key: str) -> str:
        if self.public:
            return self.url_for(key)
        try:
            signed = await self._storage.from_(self.bucket).create_signed_url(
                key, self.signed_url_ttl_s
            )
        except StorageApiError as exc:
            raise self._api_error("sign", exc) from None
        except httpx.HTTPError as exc:
            raise self._transport_error("sign", exc) from None
        url = signed.get("signedURL")
        if not url:
            raise StorageError("Supabase Storage sign failed: no URL", retryable=True)
        return str(url)

    def _scrub(self, text: str) -> str:
        secret = self._key.get_secret_value()
        return text.replace(secret, "***") if secret else text

    def _api_error(self, action: str, exc: StorageApiError) -> StorageError:
        status = _status_of(exc)
        detail = self._scrub(f" ({exc.code}: {exc.message})"[:200])
        return StorageError(
            f"Supabase Storage {action} failed: HTTP {status}{detail}",
            retryable=status == 429 or status >= 500,
            status_code=status,
        )

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
        validate_key(key)
        with tempfile.TemporaryDirectory(prefix="vidpipe-upload-") as folder:
            path = Path(folder) / "video"
            with open(path, "wb") as spool:  # noqa: ASYNC230 - a new local file: instant
                video = await validated_copy(
                    chunks, spool, max_bytes=max_bytes, expected_length=expected_length
                )
            with open(path, "rb") as check:  # noqa: ASYNC230
                # The whole file, decoded, before a byte is uploaded.
                await check_playable(check, expected_seconds=expected_seconds)
            stored_type = content_type_for_brand(video.major_brand)
            metadata = {"sha256": video.sha256, "size_bytes": video.size_bytes}
            if video.size_bytes > self.tus_threshold_bytes:
                await self._tus_upload(key, path, video.size_bytes, stored_type, metadata)
            else:
                await self._standard_upload(key, path, stored_type, metadata)
        return StoredObject(
            key=key,
            url=await self._viewer_url(key),
            size_bytes=video.size_bytes,
            sha256=video.sha256,
            content_type=stored_type,
        )

    async def _standard_upload(
        self, key: str, path: Path, content_type: str, metadata: dict[str, Any]
    ) -> None:
        try:
            # A path: storage3 opens it and httpx streams it as the multipart file part.
            await self._storage.from_(self.bucket).upload(
                key,
                str(path),
                {
                    "upsert": "true",
                    "content-type": content_type,
                    "cache-control": "3600",
                    "metadata": metadata,
                },
            )
        except StorageApiError as exc:
            raise self._api_error("upload", exc) from None
        except httpx.HTTPError as exc:
            raise self._transport_error("upload", exc) from None

    async def _tus_upload(
        self, key: str, path: Path, size: int, content_type: str, metadata: dict[str, Any]
    ) -> None:
        tus = {**self._auth_headers(), "Tus-Resumable": "1.0.0"}
        fields = {
            "bucketName": self.bucket,
            "objectName": key,
            "contentType": content_type,
            "cacheControl": "3600",
            "metadata": json.dumps(metadata),
        }
        encoded = ",".join(
            f"{name} {base64.b64encode(value.encode()).decode('ascii')}"
            for name, value in fields.items()
        )
        try:
            created = await self._client.post(
                f"{self.base_url}/storage/v1/upload/resumable",
                headers={
                    **tus,
                    "Upload-Length": str(size),
                    "Upload-Metadata": encoded,
                    "x-upsert": "true",
                },
            )
        except httpx.HTTPError as exc:
            raise self._transport_error("resumable upload", exc) from None
        if created.status_code != 201 or "location" not in created.headers:
            raise self._error("resumable upload", created)
        location = created.headers["location"]
        offset, failures = 0, 0
        with open(path, "rb") as source:  # noqa: ASYNC230 - read in a thread below
            while offset < size:
                length = min(self.tus_chunk_bytes, size - offset)
                try:
                    answer = await self._client.patch(
                        location,
                        headers={
                            **tus,
                            "Upload-Offset": str(offset),
                            "Content-Length": str(length),
                            "Content-Type": "application/offset+octet-stream",
                        },
                        # Streamed from the file in blocks: a chunk held as one bytes object
                        # stays alive in httpx's request/response cycle until the next GC.
                        content=_file_part(source, offset, length),
                    )
                except httpx.HTTPError as exc:
                    failures += 1
                    if failures >= _TUS_ATTEMPTS:
                        raise self._transport_error("resumable upload", exc) from None
                    offset = await self._tus_offset(location, tus)
                    continue
                if answer.status_code == 409 and failures < _TUS_ATTEMPTS:
                    failures += 1  # our offset is not the server's: ask it
                    offset = await self._tus_offset(location, tus)
                    continue
                if answer.status_code != 204:
                    raise self._error("resumable upload", answer)
                offset = int(answer.headers.get("upload-offset", offset + length))

    async def _tus_offset(self, location: str, headers: dict[str, str]) -> int:
        try:
            answer = await self._client.head(location, headers=headers)
        except httpx.HTTPError as exc:
            raise self._transport_error("resumable upload", exc) from None
        if answer.status_code != 200 or "upload-offset" not in answer.headers:
            raise self._error("resumable upload", answer)
        return int(answer.headers["upload-offset"])

    async def remove(self, keys: list[str]) -> int:
        """Delete `keys`; how many existed."""
        try:
            removed = await self._storage.from_(self.bucket).remove([validate_key(k) for k in keys])
        except StorageApiError as exc:
            raise self._api_error("remove", exc) from None
        except httpx.HTTPError as exc:
            raise self._transport_error("remove", exc) from None
        return len(removed)

    async def stat(self, key: str) -> StoredObject | None:
        path = self._object_path(key)
        try:
            info = await self._storage.from_(self.bucket).info(key)
        except StorageApiError as exc:
            if _status_of(exc) == 404:
                return None
            raise self._api_error("stat", exc) from None
        except httpx.HTTPError as exc:
            raise self._transport_error("stat", exc) from None
        raw_meta = info.get("metadata") if isinstance(info, dict) else None
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
                url=await self._viewer_url(key),
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
            url=await self._viewer_url(key),
            size_bytes=video.size_bytes,
            sha256=video.sha256,
            content_type=video.content_type,
        )

    async def open_local(self, key: str) -> Path | None:
        return None

    async def aclose(self) -> None:
        await self._client.aclose()


async def _file_part(source: IO[bytes], offset: int, length: int) -> AsyncIterator[bytes]:
    await asyncio.to_thread(source.seek, offset)
    while length > 0:
        block = await asyncio.to_thread(source.read, min(WRITE_BATCH, length))
        if not block:
            return
        length -= len(block)
        yield block


def _status_of(exc: StorageApiError) -> int:
    """The status storage-api meant: older versions answer 400 with the real one in the body."""
    with contextlib.suppress(TypeError, ValueError):
        return int(exc.status)
    return 500


def _is_not_found(response: httpx.Response) -> bool:
    if response.status_code == 404:
        return True
    # Older storage-api versions answer a missing object with 400 and {"statusCode": "404"}.
    if response.status_code == 400:
        with contextlib.suppress(ValueError):
            body = response.json()
            return isinstance(body, dict) and str(body.get("statusCode")) == "404"
    return False
