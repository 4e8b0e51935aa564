from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from tests.contracts.storage_contract import not_videos, real_mp4, top_boxes
from vidpipe.errors import InvalidVideo, TerminalProviderError
from vidpipe.storage.validation import (
    IncompleteVideo,
    Mp4StreamValidator,
    ValidatedVideo,
    VideoTooLarge,
    check_content_type,
    check_playable,
    duration_matches,
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


# --- the box structure, while streaming ------------------------------------------------------

#: The corpus entries whose box structure is wrong; the others pass it and fail the decode.
STRUCTURE_FAULTS = {
    "ftyp then HTML": "ends inside box",
    "ftyp alone": "no moov",
    "real MP4 cut at 40%": "ends inside box 'mdat'",
    "moov missing": "no moov",
    "mdat missing": "no mdat",
    "mdat size lies": "unprintable type|ends inside",
    "moov child size lies": "overruns its parent 'moov'",
    "trailing bytes after the last box": "ends inside a box header",
}


@pytest.mark.parametrize("chunk_size", [1, 7, 64 * 1024])
@pytest.mark.parametrize("name", sorted(STRUCTURE_FAULTS))
def test_broken_box_structure_is_refused(name: str, chunk_size: int) -> None:
    with pytest.raises(InvalidVideo, match=STRUCTURE_FAULTS[name]) as info:
        validate(not_videos()[name], chunk_size)
    assert not info.value.retryable


@pytest.mark.parametrize("name", ["frames that do not decode", "no video stream"])
def test_faults_only_a_decode_sees_pass_the_structure_check(name: str) -> None:
    assert validate(not_videos()[name], 1000).size_bytes == len(not_videos()[name])


def test_a_box_overrunning_its_parent_is_refused_as_its_header_arrives() -> None:
    data = not_videos()["moov child size lies"]
    moov_at = next(offset for box, offset, _ in top_boxes(data) if box == b"moov")
    validator = Mp4StreamValidator(max_bytes=10**6)
    validator.feed(data[: moov_at + 8 + 7])  # moov's header and all but one byte of mvhd's
    with pytest.raises(InvalidVideo, match="overruns"):
        validator.feed(data[moov_at + 15 : moov_at + 16])


def test_64_bit_and_to_the_end_box_sizes() -> None:
    real = real_mp4()
    boxes = {box: (offset, size) for box, offset, size in top_boxes(real)}
    free_at, _ = boxes[b"free"]
    mdat_at, mdat_size = boxes[b"mdat"]
    # The same mdat with a 64-bit size (size field 1, then the size): a legal, rarer spelling.
    payload = real[mdat_at + 8 : mdat_at + mdat_size]
    wide = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + len(payload)) + payload
    rewritten = real[:free_at] + wide + real[mdat_at + mdat_size :]  # free (8 bytes) dropped
    assert validate(rewritten, 5).size_bytes == len(real)
    # Size 0: the last box runs to the end of the file.
    to_end = real[:mdat_at] + real[mdat_at + mdat_size :] + struct.pack(">I", 0) + b"mdat" + b"x"
    assert validate(to_end, 3).size_bytes == len(to_end)


def test_a_second_moov_is_refused() -> None:
    real = real_mp4()
    _, moov_at, moov_size = next(b for b in top_boxes(real) if b[0] == b"moov")
    with pytest.raises(InvalidVideo, match="more than one moov"):
        validate(real + real[moov_at : moov_at + moov_size], 1000)


# --- the decode, on the finished file ---------------------------------------------------------


async def test_check_playable_decodes_a_file_and_a_path(tmp_path: Path) -> None:
    data = real_mp4()
    assert await check_playable(io.BytesIO(data)) == pytest.approx(1.0, abs=0.1)
    path = tmp_path / "v.mp4"
    path.write_bytes(data)
    assert await check_playable(path, expected_seconds=1.0) == pytest.approx(1.0, abs=0.1)


#: What FFmpeg itself lets through: why the box walk runs as well as the decode.
DECODER_TOLERATES = {"trailing bytes after the last box"}


@pytest.mark.parametrize("name", sorted(set(not_videos()) - DECODER_TOLERATES))
async def test_check_playable_refuses_the_faults(name: str) -> None:
    with pytest.raises(InvalidVideo, match="not a playable video"):
        await check_playable(io.BytesIO(not_videos()[name]))


@pytest.mark.parametrize("name", sorted(DECODER_TOLERATES))
async def test_the_decoder_alone_accepts_some_faults(name: str) -> None:
    assert await check_playable(io.BytesIO(not_videos()[name])) > 0


async def test_check_playable_refuses_a_duration_far_from_the_request() -> None:
    with pytest.raises(InvalidVideo, match="lasts 1s, not 8s"):
        await check_playable(io.BytesIO(real_mp4()), expected_seconds=8)


@pytest.mark.parametrize(
    ("actual", "expected", "ok"),
    [
        (1.0, None, True),
        (0.04, None, True),
        (0.0, None, False),
        (-1.0, None, False),
        (float("nan"), None, False),
        (5.0, 5.0, True),
        (4.0, 5.0, True),  # within 1 s
        (3.9, 5.0, False),
        (16.5, 20.0, True),  # within 20 %
        (15.9, 20.0, False),
        (24.0, 20.0, True),
        (0.0, 5.0, False),
    ],
)
def test_duration_matches(actual: float, expected: float | None, ok: bool) -> None:
    assert duration_matches(actual, expected) is ok
