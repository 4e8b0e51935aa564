"""What every `VideoStorage` backend promises, as one set of tests.

A backend's test class inherits `StorageContract` and defines a `storage` fixture giving a fresh,
empty store; every test here then runs against it (see test_storage_backends.py). What only one
backend does (sidecar files, upload requests) is tested beside that backend in tests/unit.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import struct
from collections.abc import AsyncIterator

import av
import pytest

from tests.contracts.samples import chunks_of, failing_after, fake_mp4
from vidpipe.errors import IncompleteVideo, InvalidVideo, VideoTooLarge
from vidpipe.media.sample import render_sample_mp4
from vidpipe.storage import StoredObject, VideoStorage

LIMIT = 10**7


@functools.cache
def real_mp4() -> bytes:
    """What the emulator serves: a real 320x180, 1 s H.264 MP4."""
    return render_sample_mp4()


def top_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each top-level box of a well-formed file."""
    boxes, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack(">I", data[offset : offset + 4])
        boxes.append((data[offset + 4 : offset + 8], offset, size))
        offset += size
    return boxes


def _audio_only_mp4() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame(format="fltp", layout="mono", samples=1024)
        frame.sample_rate, frame.pts = 8000, 0
        for plane in frame.planes:
            plane.update(b"\x00" * plane.buffer_size)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buf.getvalue()


@functools.cache
def not_videos() -> dict[str, bytes]:
    """Files that start like an MP4 and are not one: each must be refused, never stored."""
    real = real_mp4()
    boxes = {box_type: (offset, size) for box_type, offset, size in top_boxes(real)}
    ftyp_end = boxes[b"ftyp"][1]
    mdat_at, mdat_size = boxes[b"mdat"]
    moov_at, moov_size = boxes[b"moov"]
    lying_mdat = bytearray(real)
    lying_mdat[mdat_at : mdat_at + 4] = struct.pack(">I", mdat_size + 1000)
    lying_child = bytearray(real)  # moov's first child (mvhd) claims more than moov holds
    lying_child[moov_at + 8 : moov_at + 12] = struct.pack(">I", moov_size)
    blank_mdat = bytearray(real)  # every box in place, the frames zeroed: only a decode tells
    blank_mdat[mdat_at + 8 : mdat_at + mdat_size] = bytes(mdat_size - 8)
    return {
        "ftyp then HTML": real[:ftyp_end] + b"<html><body>502 Bad Gateway</body></html>",
        "ftyp alone": real[:ftyp_end],
        "real MP4 cut at 40%": real[: int(len(real) * 0.4)],
        "moov missing": real[:moov_at] + real[moov_at + moov_size :],
        "mdat missing": real[:mdat_at] + real[mdat_at + mdat_size :],
        "mdat size lies": bytes(lying_mdat),
        "moov child size lies": bytes(lying_child),
        "trailing bytes after the last box": real + b"\x00\x00\x00",
        "frames that do not decode": bytes(blank_mdat),
        "no video stream": _audio_only_mp4(),
    }


INVALID_KEYS = [
    "",
    "/etc/passwd",
    "../escape.mp4",
    "a/../../b.mp4",
    "a/..",
    "..",
    "a/../b",
    "a//b.mp4",
    "a/./b.mp4",
    "dir/",
    "spaces are bad.mp4",
    "a\\b.mp4",
    "a/b.mp4.json",
    "x.tmp",
    "é.mp4",
    "a" * 513,
]


async def put(
    storage: VideoStorage,
    key: str,
    data: bytes,
    *,
    content_type: str = "video/mp4",
    expected_length: int | None = None,
) -> StoredObject:
    return await storage.put_stream(
        key,
        chunks_of(data, 997),
        content_type=content_type,
        max_bytes=LIMIT,
        expected_length=expected_length,
    )


class StorageContract:
    """The tests every storage backend passes; subclasses provide the `storage` fixture."""

    async def test_is_a_video_storage(self, storage: VideoStorage) -> None:
        assert isinstance(storage, VideoStorage)

    async def test_put_stores_a_valid_video_with_its_size_and_sha256(
        self, storage: VideoStorage
    ) -> None:
        data = fake_mp4()
        stored = await put(storage, "req-1/0.mp4", data, expected_length=len(data))
        assert stored.key == "req-1/0.mp4"
        assert stored.size_bytes == len(data)
        assert stored.sha256 == hashlib.sha256(data).hexdigest()
        assert stored.content_type == "video/mp4"
        assert stored.url == storage.url_for("req-1/0.mp4")

    async def test_stat_after_put_is_what_put_returned(self, storage: VideoStorage) -> None:
        stored = await put(storage, "req-1/0.mp4", fake_mp4())
        assert await storage.stat("req-1/0.mp4") == stored

    async def test_stat_of_a_missing_key_is_none(self, storage: VideoStorage) -> None:
        assert await storage.stat("nothing/here.mp4") is None
        await put(storage, "req-1/0.mp4", fake_mp4())
        assert await storage.stat("req-1/1.mp4") is None

    async def test_the_stored_type_comes_from_the_ftyp_brand(self, storage: VideoStorage) -> None:
        # Blob stores announce octet-stream; the bytes decide what the video is.
        mp4 = await put(storage, "a.mp4", fake_mp4(), content_type="application/octet-stream")
        assert mp4.content_type == "video/mp4"
        mov = await put(storage, "b.mov", fake_mp4(brand=b"qt  "), content_type="video/quicktime")
        assert mov.content_type == "video/quicktime"
        assert await storage.stat("b.mov") == mov

    async def test_url_for_is_stable_and_names_the_key(self, storage: VideoStorage) -> None:
        url = storage.url_for("proj:1/req_2/variant-0.mp4")
        assert url == storage.url_for("proj:1/req_2/variant-0.mp4")
        assert url != storage.url_for("proj:1/req_2/variant-1.mp4")
        stored = await put(storage, "proj:1/req_2/variant-0.mp4", fake_mp4())
        assert stored.url == url

    async def test_putting_the_same_video_twice_is_idempotent(self, storage: VideoStorage) -> None:
        data = fake_mp4()
        first = await put(storage, "v.mp4", data)
        again = await put(storage, "v.mp4", data)
        assert again == first
        assert await storage.stat("v.mp4") == first

    async def test_a_new_video_replaces_the_old_one(self, storage: VideoStorage) -> None:
        await put(storage, "v.mp4", fake_mp4(5000))
        newer = fake_mp4(7000)
        stored = await put(storage, "v.mp4", newer)
        assert stored.sha256 == hashlib.sha256(newer).hexdigest()
        assert await storage.stat("v.mp4") == stored

    async def test_invalid_bytes_are_refused_and_leave_nothing_behind(
        self, storage: VideoStorage
    ) -> None:
        body = json.dumps({"error": {"code": "not_found", "message": "no content"}}).encode()
        with pytest.raises(InvalidVideo, match="JSON"):
            await put(storage, "j.mp4", body)
        assert await storage.stat("j.mp4") is None

    async def test_a_real_mp4_is_stored_as_is(self, storage: VideoStorage) -> None:
        data = real_mp4()
        stored = await put(storage, "real/0.mp4", data, expected_length=len(data))
        assert stored.size_bytes == len(data)
        assert stored.sha256 == hashlib.sha256(data).hexdigest()
        assert await storage.stat("real/0.mp4") == stored

    @pytest.mark.parametrize("name", sorted(not_videos()))
    async def test_a_file_that_is_not_a_whole_video_is_refused(
        self, storage: VideoStorage, name: str
    ) -> None:
        first = await put(storage, "v.mp4", fake_mp4())
        data = not_videos()[name]
        # Announced with its own length: the file is what the server meant to send.
        with pytest.raises(InvalidVideo) as info:
            await put(storage, "v.mp4", data, expected_length=len(data))
        assert not info.value.retryable  # terminal: the fetcher reports it, never retries it
        with pytest.raises(InvalidVideo):
            await put(storage, "new.mp4", data)
        assert await storage.stat("new.mp4") is None
        assert await storage.stat("v.mp4") == first  # the previous version is untouched

    async def test_a_non_video_content_type_is_refused(self, storage: VideoStorage) -> None:
        with pytest.raises(InvalidVideo, match="application/json"):
            await put(storage, "j.mp4", fake_mp4(), content_type="application/json")
        assert await storage.stat("j.mp4") is None

    async def test_a_too_large_video_is_refused_without_draining_the_stream(
        self, storage: VideoStorage
    ) -> None:
        consumed = 0

        async def counting() -> AsyncIterator[bytes]:
            nonlocal consumed
            async for chunk in chunks_of(fake_mp4(100_000), 1000):
                consumed += len(chunk)
                yield chunk

        with pytest.raises(VideoTooLarge):
            await storage.put_stream(
                "big.mp4", counting(), content_type="video/mp4", max_bytes=10_000
            )
        assert consumed <= 11_000  # stopped at the limit
        assert await storage.stat("big.mp4") is None

    async def test_a_cut_transfer_is_incomplete(self, storage: VideoStorage) -> None:
        data = fake_mp4()
        with pytest.raises(IncompleteVideo):
            await put(storage, "cut.mp4", data[:3000], expected_length=len(data))
        with pytest.raises(IncompleteVideo):
            await put(storage, "cut.mp4", data, expected_length=len(data) - 1)
        assert await storage.stat("cut.mp4") is None

    async def test_a_stream_failing_midway_leaves_nothing_behind(
        self, storage: VideoStorage
    ) -> None:
        with pytest.raises(ConnectionResetError):
            await storage.put_stream(
                "r/0.mp4",
                failing_after(fake_mp4(9000), 4000),
                content_type="video/mp4",
                max_bytes=LIMIT,
            )
        assert await storage.stat("r/0.mp4") is None

    async def test_a_failed_put_keeps_the_previous_version(self, storage: VideoStorage) -> None:
        first = await put(storage, "v.mp4", fake_mp4())
        with pytest.raises(ConnectionResetError):
            await storage.put_stream(
                "v.mp4",
                failing_after(fake_mp4(9000), 4000),
                content_type="video/mp4",
                max_bytes=LIMIT,
            )
        with pytest.raises(InvalidVideo):
            await put(storage, "v.mp4", b"<html>gateway timeout</html>")
        assert await storage.stat("v.mp4") == first

    @pytest.mark.parametrize("key", INVALID_KEYS)
    async def test_invalid_keys_are_refused(self, storage: VideoStorage, key: str) -> None:
        with pytest.raises(ValueError):
            storage.url_for(key)
        with pytest.raises(ValueError):
            await storage.stat(key)
        with pytest.raises(ValueError):
            await put(storage, key, fake_mp4())

    async def test_open_local_is_none_or_the_stored_file(self, storage: VideoStorage) -> None:
        data = fake_mp4()
        await put(storage, "v.mp4", data)
        path = await storage.open_local("v.mp4")
        assert path is None or path.read_bytes() == data
        assert await storage.open_local("other.mp4") is None
