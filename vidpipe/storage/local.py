"""Videos in a local folder: atomic writes, and `<key>.json` sidecars caching size and sha256."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from vidpipe.errors import InvalidVideo
from vidpipe.storage.base import WRITE_BATCH, StoredObject, validate_key, validated_copy
from vidpipe.storage.validation import (
    Mp4StreamValidator,
    ValidatedVideo,
    check_content_type,
    check_playable,
)

__all__ = ["LocalFolderStorage"]


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk too (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flush_and_sync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


def _write_cache_file(path: Path, data: bytes) -> None:
    """Write a file readers see whole or not at all (a temp file, renamed), without fsync: a
    cache that a crash may leave empty or stale, which its reader detects and recomputes."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
            while block := f.read(WRITE_BATCH):
                validator.feed(block)
        return validator.finish()
    except InvalidVideo:
        return None


class LocalFolderStorage:
    """Videos as files under `root`; `<key>.json` sidecars hold size, sha256 and content type.

    A download is written to a temp file in the destination folder, fsynced, decoded by PyAV
    (`check_playable`), then renamed over the final name, so a crash mid-download never leaves a
    partial file under a real key, and no file that does not play ever gets one.
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
        expected_seconds: float | None = None,
    ) -> StoredObject:
        check_content_type(content_type)
        path = self._path(key)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                video = await validated_copy(
                    chunks, f, max_bytes=max_bytes, expected_length=expected_length
                )
                await asyncio.to_thread(_flush_and_sync, f)
            # The whole file, decoded, before it takes the real name.
            await check_playable(tmp, expected_seconds=expected_seconds)
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
        # The sidecar is only a cache (stat recomputes without it, or when it is torn or stale),
        # so failing to write it must not fail a put whose video is already safely in place,
        # and it needs no fsync of its own. mtime_ns ties it to this version of the video.
        sidecar = {
            "size_bytes": stored.size_bytes,
            "sha256": stored.sha256,
            "content_type": stored.content_type,
            "mtime_ns": path.stat().st_mtime_ns,
        }
        with contextlib.suppress(OSError):
            _write_cache_file(self._sidecar(path), json.dumps(sidecar).encode())

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
