"""What a video store is: the `VideoStorage` interface, the key rules, and the validated copy.

Every backend validates the bytes (`vidpipe.storage.validation`) while it receives them, through
`validated_copy`, and leaves nothing new behind when anything goes wrong, so a stored object is
always a complete, checked video.

Keys are relative paths of ``[A-Za-z0-9._:/-]``, at most 512 characters, with no ``.``, ``..`` or
empty segment, no segment over 200 characters and no leading ``/``; they may not end in ``.json``
or ``.tmp`` (the local folder's sidecars and temp files). Every such key is a path the local
filesystem takes (a file name of at most 255 bytes, with room for the sidecar's and the temp
file's additions) and an object name Supabase Storage takes. `key_segment` turns any text (a
request id, a provider's generation id) into a segment that obeys these rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from vidpipe.storage.validation import Mp4StreamValidator, ValidatedVideo

__all__ = [
    "MAX_SEGMENT_CHARS",
    "WRITE_BATCH",
    "StoredObject",
    "VideoStorage",
    "key_segment",
    "validate_key",
    "validated_copy",
]

#: Writes are batched to this size: large enough that thread hand-offs are rare, small enough
#: that memory stays flat whatever the video size.
WRITE_BATCH = 1024 * 1024
_KEY_RE = re.compile(r"[A-Za-z0-9._:/-]{1,512}")
#: The longest key segment: a file name is at most 255 bytes, and the local folder adds up to
#: about 20 to a video's name for its sidecar's temp file (".{name}.json.XXXXXXXX.tmp").
MAX_SEGMENT_CHARS = 200
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._:-]+")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._:-]")
_DIGEST_CHARS = 32


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
        expected_seconds: float | None = None,
    ) -> StoredObject:
        """Store a video under `key` (replacing any previous one) after validating it.

        `content_type` is what the download announced; it is checked, and the stored type is
        derived from the file's ftyp brand. `expected_seconds`, when known, is how long the
        video was asked to last: one further off than `duration_matches` allows is refused
        (InvalidVideo). On any error nothing new is left behind.
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
    parts = key.split("/")
    if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError("storage key must be a relative path without '.', '..' or empty segments")
    if any(len(part) > MAX_SEGMENT_CHARS for part in parts):
        raise ValueError(f"storage key segments must be at most {MAX_SEGMENT_CHARS} characters")
    if key.endswith((".json", ".tmp")):
        raise ValueError("storage key must not end in .json or .tmp")
    return key


def key_segment(text: str, *, max_chars: int = MAX_SEGMENT_CHARS) -> str:
    """`text` as one key segment: itself when it already is a valid one of at most `max_chars`,
    else its safe characters (the others as "_"), cut, then "-" and a hash of the whole text, so
    distinct texts stay distinct and the same text always maps to the same segment."""
    if len(text) <= max_chars and _SEGMENT_RE.fullmatch(text) and text.strip("."):
        return text
    if max_chars <= _DIGEST_CHARS:
        raise ValueError(f"a key segment needs more than {_DIGEST_CHARS} characters")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    prefix = _UNSAFE_RE.sub("_", text)[: max_chars - _DIGEST_CHARS - 1]
    return f"{prefix}-{digest}"


class _BatchedWriter:
    """Hashes and writes the checked chunks off the event loop, in ~1 MiB batches.

    One batch is written (and hashed: hashlib lets go of the GIL) by a worker thread while the
    next one arrives, so the download never waits for the disk, and memory holds at most two
    batches whatever the video size."""

    def __init__(self, file: IO[bytes], validator: Mp4StreamValidator) -> None:
        self._file = file
        self._validator = validator
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._writing: asyncio.Future[None] | None = None

    async def write(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= WRITE_BATCH:
            await self._hand_over()

    async def _hand_over(self) -> None:
        await self.wait()
        if self._pending:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            self._writing = asyncio.ensure_future(asyncio.to_thread(self._write, batch))

    def _write(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self._validator.hash_more(chunk)
        self._file.writelines(batch)

    async def wait(self) -> None:
        """Until the batch being written is on its way to the file (its error raised here)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def flush(self) -> None:
        await self._hand_over()
        await self.wait()


async def validated_copy(
    chunks: AsyncIterator[bytes],
    file: IO[bytes],
    *,
    max_bytes: int,
    expected_length: int | None,
) -> ValidatedVideo:
    """Copy `chunks` into `file`, validating each before it is written.

    Raises InvalidVideo (VideoTooLarge, IncompleteVideo) as soon as the stream shows it; the
    caller then discards `file`.
    """
    validator = Mp4StreamValidator(max_bytes=max_bytes, expected_length=expected_length)
    writer = _BatchedWriter(file, validator)
    try:
        async for chunk in chunks:
            validator.feed(chunk, hashed=False)  # raises before a bad chunk is written
            await writer.write(chunk)
        await writer.flush()
    finally:
        # Never leave a thread writing into a file the caller is about to discard.
        with contextlib.suppress(Exception):
            await writer.wait()
    return validator.finish()
