"""Streaming validation of a downloaded video, chunk by chunk, before anything is stored.

Providers that cannot hand the video over often answer 200 with a JSON or HTML error body, so the
bytes themselves are checked: the stream must open with an ISO-BMFF ``ftyp`` box (what MP4 and
QuickTime files start with). Size and sha256 are computed on the fly, so memory never grows with
the video, and an oversized download is refused the moment it crosses the limit.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from vidpipe.errors import IncompleteVideo, InvalidVideo, VideoTooLarge

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "IncompleteVideo",
    "Mp4StreamValidator",
    "ValidatedVideo",
    "VideoTooLarge",
    "check_content_type",
    "content_type_for_brand",
]

# Enough for box size (4), box type (4) and major brand (4).
_HEADER_LEN = 12
# An ftyp box is size + type + major brand + minor version + 4 bytes per compatible brand; real
# files list a handful of brands, so anything huge means the bytes are not an ftyp box at all.
_FTYP_MIN = 16
_FTYP_MAX = 4096

#: Content types a video download may carry. octet-stream variants are what blob stores send by
#: default; the ftyp check decides whether those bytes really are a video.
ACCEPTED_CONTENT_TYPES = frozenset(
    {
        "video/mp4",
        "video/quicktime",
        "video/x-m4v",
        "application/mp4",
        "application/octet-stream",
        "binary/octet-stream",
    }
)


@dataclass(frozen=True, slots=True)
class ValidatedVideo:
    size_bytes: int
    sha256: str
    #: The ftyp major brand, e.g. "isom", "mp42", "qt  " (trailing spaces kept).
    major_brand: str

    @property
    def content_type(self) -> str:
        return content_type_for_brand(self.major_brand)


def content_type_for_brand(major_brand: str) -> str:
    """The content type to store a validated file under: QuickTime for 'qt  ', MP4 otherwise."""
    return "video/quicktime" if major_brand == "qt  " else "video/mp4"


def check_content_type(content_type: str | None) -> None:
    """Refuse a download whose Content-Type says it is not a video (an error page, JSON, text).

    A missing header is accepted: the ftyp check on the bytes is the real test.
    """
    if content_type is None or not content_type.strip():
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in ACCEPTED_CONTENT_TYPES:
        return
    raise InvalidVideo(f"download has content type {media_type!r}, not a video")


def _describe(head: bytes) -> str:
    """A short guess at what the bytes are, for the error message (never the bytes themselves)."""
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "looks like JSON"
    if stripped[:1] == b"<":
        return "looks like HTML/XML"
    return "no ftyp box"


class Mp4StreamValidator:
    """Feed a download chunk by chunk; `finish()` returns size and sha256 or raises InvalidVideo.

    The header check runs as soon as 12 bytes have arrived, however they are split into chunks.
    """

    def __init__(self, *, max_bytes: int, expected_length: int | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if expected_length is not None and expected_length < 0:
            raise ValueError("expected_length must not be negative")
        self._max_bytes = max_bytes
        self._expected_length = expected_length
        self._sha = hashlib.sha256()
        self._size = 0
        self._head = bytearray()
        self._ftyp_size = 0
        self._major_brand: str | None = None
        self._finished = False

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def major_brand(self) -> str | None:
        return self._major_brand

    def feed(self, chunk: bytes) -> None:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if not chunk:
            return
        self._size += len(chunk)
        # Checked before hashing so a too-large stream stops here; the caller must not write it.
        if self._size > self._max_bytes:
            raise VideoTooLarge(f"video exceeds the {self._max_bytes}-byte limit")
        if self._expected_length is not None and self._size > self._expected_length:
            raise IncompleteVideo(
                f"download is longer than its announced {self._expected_length} bytes"
            )
        if self._major_brand is None:
            self._head += chunk[: _HEADER_LEN - len(self._head)]
            if len(self._head) >= _HEADER_LEN:
                self._check_header(bytes(self._head))
        self._sha.update(chunk)

    def _check_header(self, head: bytes) -> None:
        (box_size,) = struct.unpack(">I", head[:4])
        if head[4:8] != b"ftyp":
            raise InvalidVideo(f"not an MP4: {_describe(head)}")
        # Size 0 ("to end of file") and 1 (64-bit size) are legal for other boxes, never for ftyp.
        if not _FTYP_MIN <= box_size <= _FTYP_MAX:
            raise InvalidVideo(f"not an MP4: ftyp box has an implausible size {box_size}")
        self._ftyp_size = box_size
        self._major_brand = head[8:12].decode("latin-1")

    def finish(self) -> ValidatedVideo:
        self._finished = True
        if self._size == 0:
            raise InvalidVideo("download is empty")
        if self._major_brand is None:
            # Fewer than 12 bytes: still say what it looks like when there is something to go on.
            head = bytes(self._head)
            if len(head) >= 8 and head[4:8] != b"ftyp":
                raise InvalidVideo(f"not an MP4: {_describe(head)}")
            raise InvalidVideo(f"download is too short to be a video ({self._size} bytes)")
        if self._expected_length is not None and self._size != self._expected_length:
            raise IncompleteVideo(
                f"download ended after {self._size} of {self._expected_length} announced bytes"
            )
        if self._size < self._ftyp_size:
            raise InvalidVideo("not an MP4: the stream ends inside its ftyp box")
        return ValidatedVideo(
            size_bytes=self._size, sha256=self._sha.hexdigest(), major_brand=self._major_brand
        )
