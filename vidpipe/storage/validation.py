"""Validation of a downloaded video: its box structure while it streams, then a decode.

Providers that cannot hand the video over often answer 200 with a JSON or HTML error body, and a
cut transfer can look complete, so the bytes themselves are checked in two steps:

1. `Mp4StreamValidator`, chunk by chunk while the download streams: the stream opens with an
   ISO-BMFF ``ftyp`` box; every box header is read as it arrives, and the box sizes must tile the
   file exactly (no box overruns its parent or the end of the file, nothing is left over); a
   ``moov`` box (with ``mvhd`` and a ``trak``) and an ``mdat`` box are present. Size and sha256
   are computed on the fly. Memory is a few box headers, whatever the size of the video, and an
   oversized download is refused the moment it crosses the limit.
2. `check_playable`, on the finished temp file before it becomes the result: PyAV opens it,
   decodes the first frame, and the duration is positive (and close to the requested one when
   the caller knows it). It runs in a worker thread.

Either check failing raises `InvalidVideo` (terminal); nothing is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vidpipe.errors import IncompleteVideo, InvalidVideo, VideoProbeError, VideoTooLarge
from vidpipe.media.sample import probe_first_frame

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "IncompleteVideo",
    "Mp4StreamValidator",
    "ValidatedVideo",
    "VideoTooLarge",
    "check_content_type",
    "check_playable",
    "content_type_for_brand",
    "duration_matches",
]

# Enough for box size (4), box type (4) and major brand (4).
_HEADER_LEN = 12
# An ftyp box is size + type + major brand + minor version + 4 bytes per compatible brand; real
# files list a handful of brands, so anything huge means the bytes are not an ftyp box at all.
_FTYP_MIN = 16
_FTYP_MAX = 4096
# Boxes whose payload is only child boxes, walked so their children must add up to their size.
# Others (mdat, free, udta, meta, stsd, ...) are skipped whole: their payload is not boxes, or
# not only boxes.
_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex"})
# Deeper than any real file nests the containers above; bounds the walker's memory.
_MAX_DEPTH = 8

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


def _box_name(box_type: bytes) -> str:
    return box_type.decode("latin-1") if all(0x20 <= b < 0x7F for b in box_type) else "?"


class _BoxWalker:
    """Reads ISO-BMFF box headers as the bytes stream past; keeps only the open containers.

    `pos` is the offset of the next box header; `open` holds (end, type) of each container the
    stream is inside. A box must end within its parent, and the last top-level box at the end of
    the file (or, with size 0, extend to it).
    """

    def __init__(self) -> None:
        self.pos = 0
        self.open: list[tuple[int, bytes]] = []
        self.header = bytearray()
        self.to_end: bytes | None = None  # the type of a size-0 box: everything after is its body
        self.current: tuple[int, int, bytes] | None = None  # (start, end, type) of the last box
        self.seen_top: set[bytes] = set()
        self.seen_in_moov: set[bytes] = set()

    def feed(self, chunk: bytes, base: int) -> None:
        """Walk the headers inside `chunk`, which starts at file offset `base`."""
        end = base + len(chunk)
        while self.to_end is None:
            at = self.pos + len(self.header)  # the next header byte wanted
            if at >= end:
                return
            need = 8
            if len(self.header) >= 8 and struct.unpack(">I", self.header[:4])[0] == 1:
                need = 16  # a 64-bit size follows the type
            self.header += chunk[at - base : at - base + need - len(self.header)]
            if len(self.header) < need:
                continue
            if need == 8 and struct.unpack(">I", self.header[:4])[0] == 1:
                continue  # read the 64-bit size first
            self._box(bytes(self.header))
            self.header.clear()

    def _box(self, header: bytes) -> None:
        (size32,) = struct.unpack(">I", header[:4])
        box_type = header[4:8]
        name = _box_name(box_type)
        if name == "?":
            raise InvalidVideo("not an MP4: a box has an unprintable type (the sizes are wrong)")
        start = self.pos
        if size32 == 1:
            (size,) = struct.unpack(">Q", header[8:16])
            header_len = 16
        elif size32 == 0:
            if self.open:
                raise InvalidVideo(f"not an MP4: box {name!r} inside a container has size 0")
            self.to_end = box_type
            self._record(box_type, inside=None)
            return
        else:
            size, header_len = size32, 8
        if size < header_len:
            raise InvalidVideo(f"not an MP4: box {name!r} has an impossible size {size}")
        box_end = start + size
        parent = self.open[-1] if self.open else None
        if parent is not None and box_end > parent[0]:
            raise InvalidVideo(
                f"not an MP4: box {name!r} overruns its parent {_box_name(parent[1])!r}"
            )
        self._record(box_type, inside=parent[1] if parent else None)
        self.current = (start, box_end, box_type)
        descend = box_type in _CONTAINERS and (parent is not None or box_type == b"moov")
        if descend and len(self.open) < _MAX_DEPTH:
            self.open.append((box_end, box_type))
            self.pos = start + header_len
        else:
            self.pos = box_end
        while self.open and self.open[-1][0] == self.pos:
            self.open.pop()

    def _record(self, box_type: bytes, *, inside: bytes | None) -> None:
        if inside is None:
            if box_type == b"moov" and b"moov" in self.seen_top:
                raise InvalidVideo("not an MP4: more than one moov box")
            self.seen_top.add(box_type)
        elif inside == b"moov":
            self.seen_in_moov.add(box_type)

    def finish(self, size: int) -> None:
        if self.to_end is None and (self.pos != size or self.header):
            if self.current is not None and self.current[1] > size:
                start, box_end, box_type = self.current
                raise InvalidVideo(
                    f"not an MP4: the file ends inside box {_box_name(box_type)!r} "
                    f"({size - start} of its {box_end - start} bytes)"
                )
            raise InvalidVideo("not an MP4: the file ends inside a box header")
        for box_type in (b"moov", b"mdat"):
            if box_type not in self.seen_top:
                raise InvalidVideo(f"not an MP4: no {box_type.decode()} box")
        for box_type in (b"mvhd", b"trak"):
            if box_type not in self.seen_in_moov:
                raise InvalidVideo(f"not an MP4: the moov box has no {box_type.decode()}")


class Mp4StreamValidator:
    """Feed a download chunk by chunk; `finish()` returns size and sha256 or raises InvalidVideo.

    The header check runs as soon as 12 bytes have arrived, however they are split into chunks;
    a box whose size cannot be right is refused as soon as its header has arrived.
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
        self._boxes = _BoxWalker()
        self._finished = False

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def major_brand(self) -> str | None:
        return self._major_brand

    def feed(self, chunk: bytes, *, hashed: bool = True) -> None:
        """Check the next `chunk` of the stream (raises `InvalidVideo` at the first bad byte).

        With `hashed=False` the caller hashes the bytes itself, in order, with `hash_more`
        (a writer thread does, beside its writes, off the event loop)."""
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
        if self._major_brand is not None:
            self._boxes.feed(chunk, self._size - len(chunk))
        if hashed:
            self._sha.update(chunk)

    def hash_more(self, data: bytes) -> None:
        """Add bytes already checked by `feed(..., hashed=False)` to the digest, in order."""
        self._sha.update(data)

    def _check_header(self, head: bytes) -> None:
        (box_size,) = struct.unpack(">I", head[:4])
        if head[4:8] != b"ftyp":
            raise InvalidVideo(f"not an MP4: {_describe(head)}")
        # Size 0 ("to end of file") and 1 (64-bit size) are legal for other boxes, never for ftyp.
        if not _FTYP_MIN <= box_size <= _FTYP_MAX:
            raise InvalidVideo(f"not an MP4: ftyp box has an implausible size {box_size}")
        self._ftyp_size = box_size
        self._major_brand = head[8:12].decode("latin-1")
        self._boxes.feed(head, 0)

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
        self._boxes.finish(self._size)
        return ValidatedVideo(
            size_bytes=self._size, sha256=self._sha.hexdigest(), major_brand=self._major_brand
        )


#: How far a video's duration may be from the requested one: generators round to their own
#: frame grid and trim, so a second or a fifth of the length, whichever is larger.
DURATION_TOLERANCE_S = 1.0
DURATION_TOLERANCE_SHARE = 0.2


def duration_matches(actual_s: float, expected_s: float | None) -> bool:
    """Whether a video of `actual_s` seconds is what was asked for (`expected_s`, if known).

    Without an expected duration, any positive duration passes.
    """
    if not actual_s > 0:  # also false for NaN
        return False
    if expected_s is None:
        return True
    return abs(actual_s - expected_s) <= max(
        DURATION_TOLERANCE_S, DURATION_TOLERANCE_SHARE * expected_s
    )


async def check_playable(
    source: Path | IO[bytes], *, expected_seconds: float | None = None
) -> float:
    """Open a finished download with PyAV, decode its first frame, check its duration.

    `source` is a path or a seekable binary file (left open; its position is not restored).
    Returns the duration in seconds; raises InvalidVideo. Runs in a worker thread: decoding is
    CPU work and file I/O.
    """
    try:
        duration = await asyncio.to_thread(probe_first_frame, source)
    except VideoProbeError as exc:
        raise InvalidVideo(f"not a playable video: {exc}") from None
    if not duration_matches(duration, expected_seconds):
        wanted = "a positive duration" if expected_seconds is None else f"{expected_seconds:g}s"
        raise InvalidVideo(f"video lasts {duration:g}s, not {wanted}")
    return duration
