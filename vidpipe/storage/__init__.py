"""Where finished videos are kept: a local folder or Supabase Storage.

Both implementations validate the bytes (see `vidpipe.storage.validation`) while they receive
them and leave nothing behind when anything goes wrong, so a stored object is always a
complete, checked video.

Storage URLs (``VIDPIPE_STORAGE_URL``), read by `storage_from_url`:

``file://PATH``
    A local folder. Everything after ``file://`` is the path: ``file:///srv/videos`` is absolute,
    ``file://.vidpipe/videos`` is relative to ``base_dir`` (default: the working directory).
``supabase://BUCKET@HOST``
    Supabase Storage at ``https://HOST`` (a bare project ref without dots means
    ``REF.supabase.co``; loopback hosts such as ``127.0.0.1:54321`` from ``supabase start`` use
    plain http).
``supabase://BUCKET``
    Supabase Storage at the URL in the ``SUPABASE_URL`` environment variable.

``BUCKET`` may be left empty (``supabase://@HOST``, ``supabase://``) for ``output-videos``. The
service-role key comes from the ``supabase_key`` argument, else ``SUPABASE_SERVICE_ROLE_KEY``,
``SUPABASE_SERVICE_KEY`` or ``SUPABASE_KEY``; it never appears in a URL, a log line or an error.

Keys are relative paths of ``[A-Za-z0-9._:/-]``, at most 512 characters, with no ``.``, ``..`` or
empty segment and no leading ``/``; they may not end in ``.json`` or ``.tmp`` (the local folder's
sidecars and temp files).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from vidpipe.errors import ConfigurationError, InvalidVideo, StorageError
from vidpipe.storage.validation import (
    Mp4StreamValidator,
    ValidatedVideo,
    check_content_type,
    content_type_for_brand,
)

__all__ = [
    "DEFAULT_BUCKET",
    "LocalFolderStorage",
    "StorageError",
    "StoredObject",
    "SupabaseStorage",
    "VideoStorage",
    "storage_from_url",
    "validate_key",
]

DEFAULT_BUCKET = "output-videos"
# Writes are batched to this size: large enough that thread hand-offs are rare, small enough that
# memory stays flat whatever the video size.
_WRITE_BATCH = 1024 * 1024
# SpooledTemporaryFile keeps this much in memory before it rolls over to disk.
_SPOOL_MEMORY = 1024 * 1024
_KEY_RE = re.compile(r"[A-Za-z0-9._:/-]{1,512}")
_BUCKET_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
_KEY_ENV_NAMES = ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY", "SUPABASE_KEY")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    url: str
    size_bytes: int
    sha256: str
    content_type: str


@runtime_checkable
class VideoStorage(Protocol):
    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        max_bytes: int,
        expected_length: int | None = None,
    ) -> StoredObject:
        """Store a video under `key` (replacing any previous one) after validating it.

        `content_type` is what the download announced; it is checked, and the stored type is
        derived from the file's ftyp brand. On any error nothing new is left behind.
        """
        ...

    async def stat(self, key: str) -> StoredObject | None:
        """What is stored under `key`, or None; lets a redelivered event skip a second upload."""
        ...

    def url_for(self, key: str) -> str: ...

    async def open_local(self, key: str) -> Path | None:
        """A local path to the stored file when the backend has one, else None."""
        ...

    async def aclose(self) -> None: ...


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise ValueError."""
    if not _KEY_RE.fullmatch(key):
        raise ValueError("storage key must be 1-512 characters of [A-Za-z0-9._:/-]")
    # Segment-wise, so a request id such as "v1..2" stays usable while "../x" cannot escape.
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError("storage key must be a relative path without '.', '..' or empty segments")
    if key.endswith((".json", ".tmp")):
        raise ValueError("storage key must not end in .json or .tmp")
    return key


class _BatchedWriter:
    """Buffers small chunks and writes them to `file` off the event loop in ~1 MiB batches."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._pending = bytearray()

    async def write(self, chunk: bytes) -> None:
        self._pending += chunk
        if len(self._pending) >= _WRITE_BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            await asyncio.to_thread(self._file.write, data)


async def _validated_copy(
    chunks: AsyncIterator[bytes],
    file: IO[bytes],
    *,
    max_bytes: int,
    expected_length: int | None,
) -> ValidatedVideo:
    """Copy `chunks` into `file`, validating each before it is written."""
    validator = Mp4StreamValidator(max_bytes=max_bytes, expected_length=expected_length)
    writer = _BatchedWriter(file)
    async for chunk in chunks:
        validator.feed(chunk)  # raises before a bad or oversized chunk is written
        await writer.write(chunk)
    result = validator.finish()
    await writer.flush()
    return result


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk too (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _hash_file(path: Path) -> ValidatedVideo | None:
    """Validate and hash a stored file (used when its sidecar is missing); None if not a video."""
    size = path.stat().st_size
    validator = Mp4StreamValidator(max_bytes=max(size, 1))
    try:
        with path.open("rb") as f:
            while block := f.read(_WRITE_BATCH):
                validator.feed(block)
        return validator.finish()
    except InvalidVideo:
        return None


class LocalFolderStorage:
    """Videos as files under `root`; `<key>.json` sidecars hold size, sha256 and content type.

    A download is written to a temp file in the destination folder, fsynced, then renamed over the
    final name, so a crash mid-download never leaves a partial file under a real key.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        path = self.root / validate_key(key)
        # Belt and braces against symlinks inside root pointing elsewhere.
        if not path.resolve().is_relative_to(self.root):
            raise ValueError("storage key resolves outside the storage folder")
        return path

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".json")

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        max_bytes: int,
        expected_length: int | None = None,
    ) -> StoredObject:
        check_content_type(content_type)
        path = self._path(key)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                video = await _validated_copy(
                    chunks, f, max_bytes=max_bytes, expected_length=expected_length
                )
                await asyncio.to_thread(_flush_and_sync, f)
            await asyncio.to_thread(os.replace, tmp, path)
        except BaseException:
            # Also on cancellation: the temp file must not outlive the attempt.
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # a quick metadata call; no thread hand-off while unwinding
            raise
        stored = StoredObject(
            key=key,
            url=path.as_uri(),
            size_bytes=video.size_bytes,
            sha256=video.sha256,
            content_type=video.content_type,
        )
        await asyncio.to_thread(self._finish_put, path, stored)
        return stored

    def _finish_put(self, path: Path, stored: StoredObject) -> None:
        _fsync_dir(path.parent)
        # The sidecar is only a cache (stat recomputes without it), so failing to write it must
        # not fail a put whose video is already safely in place. mtime_ns ties it to this version.
        sidecar = {
            "size_bytes": stored.size_bytes,
            "sha256": stored.sha256,
            "content_type": stored.content_type,
            "mtime_ns": path.stat().st_mtime_ns,
        }
        with contextlib.suppress(OSError):
            _write_file_atomic(self._sidecar(path), json.dumps(sidecar).encode())

    async def stat(self, key: str) -> StoredObject | None:
        path = self._path(key)
        return await asyncio.to_thread(self._stat_sync, key, path)

    def _stat_sync(self, key: str, path: Path) -> StoredObject | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        meta = self._read_sidecar(path)
        if meta is not None and (meta.pop("size_bytes"), meta.pop("mtime_ns")) == (
            st.st_size,
            st.st_mtime_ns,
        ):
            return StoredObject(key=key, url=path.as_uri(), size_bytes=st.st_size, **meta)
        video = _hash_file(path)
        if video is None:
            return None
        return StoredObject(
            key=key,
            url=path.as_uri(),
            size_bytes=video.size_bytes,
            sha256=video.sha256,
            content_type=video.content_type,
        )

    def _read_sidecar(self, path: Path) -> dict[str, Any] | None:
        try:
            raw = json.loads(self._sidecar(path).read_bytes())
        except (OSError, ValueError):
            return None
        if not (
            isinstance(raw, dict)
            and isinstance(raw.get("size_bytes"), int)
            and isinstance(raw.get("sha256"), str)
            and isinstance(raw.get("content_type"), str)
            and isinstance(raw.get("mtime_ns"), int)
        ):
            return None
        return {k: raw[k] for k in ("size_bytes", "sha256", "content_type", "mtime_ns")}

    async def open_local(self, key: str) -> Path | None:
        path = self._path(key)
        return path if await asyncio.to_thread(path.is_file) else None

    async def aclose(self) -> None:
        return None


def _flush_and_sync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


class SupabaseStorage:
    """Videos in a Supabase Storage bucket, through its REST API.

    The upload needs the whole body, and validation must finish before anything is sent, so the
    download is spooled to a temp file (memory up to 1 MiB, then disk) and streamed from there.
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
    ) -> StoredObject:
        check_content_type(content_type)
        path = self._object_path(key)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) as spool:
            video = await _validated_copy(
                chunks, spool, max_bytes=max_bytes, expected_length=expected_length
            )
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
                    validator.feed(chunk)
        except httpx.HTTPError as exc:
            raise self._transport_error("download", exc) from None
        try:
            video = validator.finish()
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
    while block := await asyncio.to_thread(file.read, _WRITE_BATCH):
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


def _supabase_base_url(host: str) -> str:
    try:
        parsed = urlsplit(f"//{host}")
        hostname, port = parsed.hostname or "", parsed.port
    except ValueError:
        raise ConfigurationError("supabase storage URL has an invalid host") from None
    if not hostname:
        raise ConfigurationError("supabase storage URL has an invalid host")
    if "." not in hostname and ":" not in hostname and hostname != "localhost" and port is None:
        return f"https://{hostname}.supabase.co"  # a bare project ref
    # `supabase start` serves plain http on loopback; everything else must be https.
    scheme = "http" if hostname in _LOOPBACK_HOSTS else "https"
    return f"{scheme}://{host}"


def storage_from_url(
    storage_url: str,
    *,
    supabase_key: SecretStr | None = None,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> VideoStorage:
    """Build the storage a URL names (forms in the module docstring); ConfigurationError if none."""
    env = os.environ if environ is None else environ
    if storage_url.startswith("file://"):
        raw_path = storage_url[len("file://") :]
        if not raw_path:
            raise ConfigurationError("file:// storage URL needs a path")
        path = Path(raw_path)
        if not path.is_absolute():
            path = (base_dir if base_dir is not None else Path.cwd()) / path
        return LocalFolderStorage(path)
    if storage_url.startswith("supabase://"):
        parts = urlsplit(storage_url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigurationError("supabase storage URL takes the form supabase://BUCKET[@HOST]")
        if "@" in parts.netloc:
            bucket, host = parts.netloc.rsplit("@", 1)
            if not host:
                raise ConfigurationError("supabase://BUCKET@HOST needs a host")
            base_url = _supabase_base_url(host)
        else:
            bucket = parts.netloc
            env_url = env.get("SUPABASE_URL")
            if not env_url:
                raise ConfigurationError(
                    "supabase://BUCKET needs SUPABASE_URL (or use supabase://BUCKET@HOST)"
                )
            base_url = env_url
        key = supabase_key
        if key is None:
            found = next((env[name] for name in _KEY_ENV_NAMES if env.get(name)), None)
            key = SecretStr(found) if found else None
        if key is None or not key.get_secret_value():
            raise ConfigurationError(
                "Supabase storage needs a service-role key (SUPABASE_SERVICE_ROLE_KEY)"
            )
        return SupabaseStorage(base_url, key, bucket or DEFAULT_BUCKET, transport=transport)
    scheme = storage_url.split(":", 1)[0] if ":" in storage_url else storage_url[:20]
    raise ConfigurationError(f"unknown storage URL scheme {scheme!r} (use file:// or supabase://)")
