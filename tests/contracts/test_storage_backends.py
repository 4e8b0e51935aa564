"""The storage contract, run against every backend: a local folder, Supabase, memory.

Supabase runs on the `supabase` client's storage against the Storage API emulator
(`vidpipe.dev.storage_emulator`), a real HTTP server: one per module, a fresh bucket per test.
"""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.contracts.samples import chunks_of, fake_mp4
from tests.contracts.storage_contract import LIMIT, StorageContract, put, real_mp4
from vidpipe.dev.storage_emulator import StorageEmulator
from vidpipe.errors import StorageError
from vidpipe.storage import LocalFolderStorage, SupabaseStorage, VideoStorage
from vidpipe.testing import MemoryStorage

SERVICE_KEY = "emulated-service-role-key"


class TestLocalFolderStorage(StorageContract):
    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[VideoStorage]:
        storage = LocalFolderStorage(tmp_path / "videos")
        yield storage
        await storage.aclose()


@pytest.fixture(scope="module")
def emulator() -> Iterator[StorageEmulator]:
    with StorageEmulator(SERVICE_KEY) as server:
        yield server


def _new_bucket(emulator: StorageEmulator, *, public: bool) -> str:
    name = f"videos-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{emulator.url}/storage/v1/bucket",
        json={"id": name, "name": name, "public": public},
        headers={"Authorization": f"Bearer {SERVICE_KEY}", "apikey": SERVICE_KEY},
    )
    response.raise_for_status()
    return name


class TestSupabaseStorage(StorageContract):
    """The real SupabaseStorage, on storage3, over the emulator; a public bucket.

    The TUS threshold is lowered so the contract's larger videos take the resumable path too.
    """

    @pytest.fixture
    async def storage(self, emulator: StorageEmulator) -> AsyncIterator[VideoStorage]:
        storage = SupabaseStorage(
            emulator.url,
            SecretStr(SERVICE_KEY),
            _new_bucket(emulator, public=True),
            tus_threshold_bytes=6000,
            tus_chunk_bytes=4096,
        )
        yield storage
        await storage.aclose()


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    async def storage(self) -> AsyncIterator[VideoStorage]:
        storage = MemoryStorage()
        yield storage
        await storage.aclose()


# --- what only Supabase does: the two upload paths, signed URLs, the placeholder's key --------


async def test_small_videos_take_the_standard_upload_and_large_ones_tus(
    emulator: StorageEmulator,
) -> None:
    storage = SupabaseStorage(
        emulator.url, SecretStr(SERVICE_KEY), _new_bucket(emulator, public=True)
    )
    before = len(emulator.requests)
    small = await put(storage, "s.mp4", real_mp4())
    seen = emulator.requests[before:]
    assert ("POST", f"/storage/v1/object/{storage.bucket}/s.mp4") in seen
    assert not any("/upload/resumable" in path for _, path in seen)

    big = fake_mp4(13 * 1024 * 1024)  # past Supabase's 6 MB: three 6 MiB-at-most chunks
    before = len(emulator.requests)
    stored = await storage.put_stream(
        "b.mp4", chunks_of(big, 65536), content_type="video/mp4", max_bytes=10**8
    )
    seen = emulator.requests[before:]
    assert [m for m, p in seen if "/upload/resumable" in p] == ["POST", "PATCH", "PATCH", "PATCH"]
    assert await storage.stat("b.mp4") == stored
    async with httpx.AsyncClient() as client:
        assert (await client.get(small.url)).content == real_mp4()
        assert (await client.get(stored.url)).content == big
    await storage.aclose()


async def test_a_redelivered_upload_upserts_and_the_video_replaces_the_placeholder(
    emulator: StorageEmulator,
) -> None:
    storage = SupabaseStorage(
        emulator.url, SecretStr(SERVICE_KEY), _new_bucket(emulator, public=True)
    )
    placeholder = await put(storage, "r/0.mp4", fake_mp4(3000))
    again = await put(storage, "r/0.mp4", fake_mp4(3000))  # a redelivered event
    assert again == placeholder
    video = await put(storage, "r/0.mp4", real_mp4())
    assert video.url == placeholder.url and video.sha256 != placeholder.sha256
    assert await storage.stat("r/0.mp4") == video
    await storage.aclose()


async def test_a_private_bucket_gets_signed_urls_with_the_configured_lifetime(
    emulator: StorageEmulator,
) -> None:
    bucket = _new_bucket(emulator, public=False)
    storage = SupabaseStorage(
        emulator.url, SecretStr(SERVICE_KEY), bucket, public=False, signed_url_ttl_s=600
    )
    stored = await put(storage, "p/0.mp4", real_mp4())
    assert "/object/sign/" in stored.url and "token=" in stored.url
    async with httpx.AsyncClient() as client:
        assert (await client.get(stored.url)).content == real_mp4()
        public = f"{emulator.url}/storage/v1/object/public/{bucket}/p/0.mp4"
        assert (await client.get(public)).status_code != 200  # private: no public read
    short = SupabaseStorage(
        emulator.url, SecretStr(SERVICE_KEY), bucket, public=False, signed_url_ttl_s=1
    )
    stat = await short.stat("p/0.mp4")
    assert stat is not None and stat.sha256 == stored.sha256

    def expiry(url: str) -> int:  # the emulator's token is "<expires>.<mac>"
        return int(url.split("token=", 1)[1].split(".", 1)[0])

    assert 590 <= expiry(stored.url) - expiry(stat.url) <= 600
    await storage.aclose()
    await short.aclose()


async def test_errors_never_contain_the_key(emulator: StorageEmulator) -> None:
    storage = SupabaseStorage(emulator.url, SecretStr("not-the-key"), "output-videos")
    with pytest.raises(StorageError) as info:
        await storage.put_stream(
            "a.mp4", chunks_of(fake_mp4()), content_type="video/mp4", max_bytes=LIMIT
        )
    assert "not-the-key" not in str(info.value) and "not-the-key" not in repr(info.value)
    await storage.aclose()


async def test_memory_stays_flat_with_the_video_size(emulator: StorageEmulator) -> None:
    """Python's peak allocation while storing a 12 MB and a 36 MB video (both over TUS) is
    about the same, and far below either size: nothing holds the whole video, or a whole
    6 MiB chunk."""
    storage = SupabaseStorage(
        emulator.url, SecretStr(SERVICE_KEY), _new_bucket(emulator, public=True)
    )
    peaks = []
    for size in (12 * 1024 * 1024, 36 * 1024 * 1024):
        data = fake_mp4(size)
        tracemalloc.start()
        try:
            stored = await storage.put_stream(
                f"m/{size}.mp4", chunks_of(data, 65536), content_type="video/mp4", max_bytes=10**9
            )
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert stored.size_bytes == len(data)
        del data
    small, large = peaks
    # The emulator runs in this process, so its buffers count too; still a few MiB at most.
    assert large < 12 * 1024 * 1024, peaks
    assert large - small < 4 * 1024 * 1024, peaks  # 3x the video, not 3x the memory
    await storage.aclose()
