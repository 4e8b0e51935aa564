from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator

import av
import pytest

from vidpipe.errors import InvalidVideo, TerminalProviderError
from vidpipe.storage.validation import (
    IncompleteVideo,
    Mp4StreamValidator,
    ValidatedVideo,
    VideoTooLarge,
    check_content_type,
)


def make_video(container_format: str = "mp4", frames: int = 12) -> bytes:
    """A real, playable video encoded by PyAV (FFmpeg) in memory."""
    codec = next(c for c in ("mpeg4", "libx264", "h264") if c in av.codecs_available)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame(64, 48, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([i * 20 % 256]) * plane.buffer_size)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return make_video()


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def validate(data: bytes, chunk_size: int, **kwargs: int | None) -> ValidatedVideo:
    validator = Mp4StreamValidator(max_bytes=kwargs.pop("max_bytes", None) or 10**9, **kwargs)
    for chunk in chunked(data, chunk_size):
        validator.feed(chunk)
    return validator.finish()


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64 * 1024])
def test_real_mp4_any_chunking(mp4: bytes, chunk_size: int) -> None:
    result = validate(mp4, chunk_size, expected_length=len(mp4))
    assert result.size_bytes == len(mp4)
    assert result.sha256 == hashlib.sha256(mp4).hexdigest()
    assert result.major_brand == "isom"
    assert result.content_type == "video/mp4"
    # The bytes really are a decodable video, so the fixture is not fooling the test.
    with av.open(io.BytesIO(mp4)) as container:
        assert container.streams.video[0].frames == 12


def test_quicktime_brand_gives_quicktime_type() -> None:
    mov = make_video("mov", frames=3)
    result = validate(mov, 5)
    assert result.major_brand == "qt  "
    assert result.content_type == "video/quicktime"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"error": {"code": "not_found", "message": "video not ready"}}', "JSON"),
        (b"<html><body>Forbidden</body></html>", "HTML"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "no ftyp"),
    ],
)
@pytest.mark.parametrize("chunk_size", [1, 1000])
def test_non_mp4_bodies_rejected(body: bytes, fragment: str, chunk_size: int) -> None:
    with pytest.raises(InvalidVideo, match=fragment) as info:
        validate(body, chunk_size)
    assert isinstance(info.value, TerminalProviderError)


def test_rejected_as_soon_as_the_header_is_complete() -> None:
    validator = Mp4StreamValidator(max_bytes=10**6)
    body = b'{"error": "quota"}'
    for i in range(11):  # a header needs 12 bytes; nothing can be decided before
        validator.feed(body[i : i + 1])
    with pytest.raises(InvalidVideo, match="JSON"):
        validator.feed(body[11:12])


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00\x18ftyp", b"\x00\x00\x00\x18ftypiso"])
def test_empty_or_too_short(data: bytes) -> None:
    with pytest.raises(InvalidVideo, match=r"empty|too short"):
        validate(data, 1)


@pytest.mark.parametrize("box_size", [0, 1, 8, 12, 15, 1_000_000])
def test_implausible_ftyp_size(box_size: int) -> None:
    data = struct.pack(">I", box_size) + b"ftypisom" + b"\x00" * 64
    with pytest.raises(InvalidVideo, match="implausible size"):
        validate(data, 4)


def test_stream_ending_inside_ftyp_box() -> None:
    data = struct.pack(">I", 32) + b"ftypisom\x00\x00\x02\x00"
    with pytest.raises(InvalidVideo, match="ends inside"):
        validate(data, 100)


def test_max_bytes_raised_as_soon_as_exceeded(mp4: bytes) -> None:
    validator = Mp4StreamValidator(max_bytes=100)
    fed = 0
    with pytest.raises(VideoTooLarge, match="100-byte limit"):
        for chunk in chunked(mp4, 10):
            validator.feed(chunk)
            fed += len(chunk)
    assert fed == 100  # the 11th chunk raised; nothing after it was read


def test_exact_max_bytes_is_fine(mp4: bytes) -> None:
    assert validate(mp4, 1000, max_bytes=len(mp4)).size_bytes == len(mp4)


def test_expected_length_mismatch(mp4: bytes) -> None:
    with pytest.raises(IncompleteVideo, match="ended after"):
        validate(mp4[:-10], 1000, expected_length=len(mp4))
    with pytest.raises(IncompleteVideo, match="longer than"):
        validate(mp4, 1000, expected_length=len(mp4) - 10)
    assert IncompleteVideo("x").retryable


def test_empty_chunks_ignored(mp4: bytes) -> None:
    validator = Mp4StreamValidator(max_bytes=10**6)
    validator.feed(b"")
    validator.feed(mp4[:5])
    validator.feed(b"")
    validator.feed(mp4[5:])
    assert validator.finish().sha256 == hashlib.sha256(mp4).hexdigest()


@pytest.mark.parametrize(
    "ct",
    [
        None,
        "",
        "video/mp4",
        "VIDEO/MP4; codecs=avc1",
        "video/quicktime",
        "application/octet-stream",
        "binary/octet-stream",
    ],
)
def test_content_type_accepted(ct: str | None) -> None:
    check_content_type(ct)


@pytest.mark.parametrize(
    "ct",
    ["application/json", "application/json; charset=utf-8", "text/plain", "text/html", "image/png"],
)
def test_content_type_rejected(ct: str) -> None:
    media = ct.split(";")[0]
    with pytest.raises(InvalidVideo, match=media):
        check_content_type(ct)
