from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from vidpipe.errors import ConfigurationError, InvalidVideo
from vidpipe.storage import (
    LocalFolderStorage,
    StorageError,
    SupabaseStorage,
    VideoStorage,
    storage_from_url,
    validate_key,
)
from vidpipe.storage.validation import VideoTooLarge

SECRET = "service-role-secret-value-123"
X_URL = "https://x.supabase.co"


def fake_mp4(payload_size: int = 5000, brand: bytes = b"isom") -> bytes:
    """ftyp + mdat: all the validator looks at (test_mp4check uses a real encoded file)."""
    ftyp = struct.pack(">I", 24) + b"ftyp" + brand + b"\x00\x00\x02\x00isomiso2"
    payload = bytes(i % 251 for i in range(payload_size))
    return ftyp + struct.pack(">I", 8 + payload_size) + b"mdat" + payload


async def chunks_of(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def failing_after(data: bytes, n_bytes: int) -> AsyncIterator[bytes]:
    async for chunk in chunks_of(data[:n_bytes], 100):
        yield chunk
    raise ConnectionResetError("provider hung up")


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["a.mp4", "req-1/0.mp4", "proj:1/req_2/variant-0.mp4", "a/b/c/d.mov"]
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
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
    ],
)
def test_invalid_keys(key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        validate_key(key)
    with pytest.raises(ValueError):
        LocalFolderStorage(tmp_path).url_for(key)


# --- local folder -----------------------------------------------------------------------------


async def test_local_put_stat_roundtrip(tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path / "videos")
    assert isinstance(storage, VideoStorage)
    data = fake_mp4()
    assert await storage.stat("req-1/0.mp4") is None

    stored = await storage.put_stream(
        "req-1/0.mp4",
        chunks_of(data, 7),
        content_type="application/octet-stream",
        max_bytes=10**6,
        expected_length=len(data),
    )

    path = tmp_path / "videos" / "req-1" / "0.mp4"
    assert path.read_bytes() == data
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.content_type == "video/mp4"  # from the ftyp brand, not the octet-stream header
    assert stored.url == path.resolve().as_uri() and stored.url.startswith("file:///")
    assert await storage.stat("req-1/0.mp4") == stored
    assert await storage.open_local("req-1/0.mp4") == path.resolve()
    assert await storage.open_local("req-1/1.mp4") is None
    assert files_under(tmp_path / "videos") == ["req-1/0.mp4", "req-1/0.mp4.json"]


async def test_local_stat_recomputes_without_sidecar(tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path)
    data = fake_mp4(brand=b"qt  ")
    stored = await storage.put_stream(
        "k.mov", chunks_of(data), content_type="video/quicktime", max_bytes=10**6
    )
    (tmp_path / "k.mov.json").unlink()
    again = await storage.stat("k.mov")
    assert again == stored
    assert again is not None and again.content_type == "video/quicktime"


async def test_local_stat_ignores_stale_sidecar_and_junk(tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path)
    await storage.put_stream(
        "k.mp4", chunks_of(fake_mp4()), content_type="video/mp4", max_bytes=10**6
    )
    # Someone replaced the file behind our back: the sidecar no longer matches its size.
    data = fake_mp4(payload_size=100)
    (tmp_path / "k.mp4").write_bytes(data)
    stat = await storage.stat("k.mp4")
    assert stat is not None and stat.sha256 == hashlib.sha256(data).hexdigest()
    # Same size, different bytes (a re-put that died before its sidecar): mtime tells them apart.
    await storage.put_stream("k.mp4", chunks_of(data), content_type="video/mp4", max_bytes=10**6)
    same_size = bytearray(data)
    same_size[-1] ^= 0xFF
    (tmp_path / "k.mp4").write_bytes(same_size)
    os.utime(tmp_path / "k.mp4", ns=(1, 1))
    stat = await storage.stat("k.mp4")
    assert stat is not None and stat.sha256 == hashlib.sha256(same_size).hexdigest()
    # A file that is not a video does not count as stored.
    (tmp_path / "junk.mp4").write_bytes(b'{"error": "nope"}')
    assert await storage.stat("junk.mp4") is None


async def test_local_failure_midway_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path)
    data = fake_mp4(payload_size=3 * 1024 * 1024)  # several write batches
    with pytest.raises(ConnectionResetError):
        await storage.put_stream(
            "r/0.mp4",
            failing_after(data, 2 * 1024 * 1024),
            content_type="video/mp4",
            max_bytes=10**8,
        )
    assert files_under(tmp_path) == []
    assert await storage.stat("r/0.mp4") is None


async def test_local_failure_keeps_previous_version(tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path)
    first = await storage.put_stream(
        "v.mp4", chunks_of(fake_mp4()), content_type="video/mp4", max_bytes=10**6
    )
    with pytest.raises(ConnectionResetError):
        await storage.put_stream(
            "v.mp4",
            failing_after(fake_mp4(9000), 4000),
            content_type="video/mp4",
            max_bytes=10**6,
        )
    assert await storage.stat("v.mp4") == first
    assert files_under(tmp_path) == ["v.mp4", "v.mp4.json"]


async def test_local_rejects_json_body(tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path)
    body = json.dumps({"error": {"code": "not_found", "message": "no content"}}).encode()
    with pytest.raises(InvalidVideo, match="JSON"):
        await storage.put_stream(
            "j.mp4", chunks_of(body, 3), content_type="video/mp4", max_bytes=10**6
        )
    with pytest.raises(InvalidVideo, match="application/json"):
        await storage.put_stream(
            "j.mp4", chunks_of(fake_mp4()), content_type="application/json", max_bytes=10**6
        )
    assert files_under(tmp_path) == []


async def test_local_size_limit(tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path)
    consumed = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal consumed
        async for chunk in chunks_of(fake_mp4(100_000), 1000):
            consumed += len(chunk)
            yield chunk

    with pytest.raises(VideoTooLarge):
        await storage.put_stream("big.mp4", counting(), content_type="video/mp4", max_bytes=10_000)
    assert consumed <= 11_000  # stopped at the limit, did not drain the stream
    assert files_under(tmp_path) == []


async def test_local_rejects_escaping_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    storage = LocalFolderStorage(root)
    with pytest.raises(ValueError, match="outside"):
        await storage.put_stream(
            "link/x.mp4", chunks_of(fake_mp4()), content_type="video/mp4", max_bytes=10**6
        )
    assert list(outside.iterdir()) == []


# --- supabase ---------------------------------------------------------------------------------


class FakeSupabase:
    """Just enough of storage-api to check what the client sends."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str, dict[str, object]]] = {}
        self.requests: list[httpx.Request] = []
        self.fail_with: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            return httpx.Response(400, json={"statusCode": "403", "error": "Unauthorized"})
        if self.fail_with:
            return httpx.Response(
                self.fail_with, json={"error": "InternalError", "message": f"bad key {SECRET}"}
            )
        path = request.url.path
        if request.method == "POST" and path.startswith("/storage/v1/object/output-videos/"):
            name = path.removeprefix("/storage/v1/object/output-videos/")
            meta = json.loads(base64.b64decode(request.headers["x-metadata"]))
            self.objects[name] = (request.read(), request.headers["content-type"], meta)
            return httpx.Response(200, json={"Key": f"output-videos/{name}", "Id": "x"})
        if request.method == "GET" and path.startswith("/storage/v1/object/info/authenticated/"):
            name = path.removeprefix("/storage/v1/object/info/authenticated/output-videos/")
            if name not in self.objects:
                return httpx.Response(400, json={"statusCode": "404", "error": "not_found"})
            body, ctype, meta = self.objects[name]
            return httpx.Response(
                200,
                json={"name": name, "size": len(body), "content_type": ctype, "metadata": meta},
            )
        if request.method == "GET" and path.startswith("/storage/v1/object/authenticated/"):
            name = path.removeprefix("/storage/v1/object/authenticated/output-videos/")
            if name not in self.objects:
                return httpx.Response(404)
            return httpx.Response(200, content=self.objects[name][0])
        return httpx.Response(404, json={"error": "not_found"})


def supabase(fake: FakeSupabase) -> SupabaseStorage:
    return SupabaseStorage(
        "https://proj.supabase.co/", SecretStr(SECRET), transport=httpx.MockTransport(fake)
    )


async def test_supabase_upload_request() -> None:
    fake = FakeSupabase()
    storage = supabase(fake)
    data = fake_mp4(1_500_000)  # past the 1 MiB spool: exercises the disk rollover
    stored = await storage.put_stream(
        "req:1/0.mp4",
        chunks_of(data, 9999),
        content_type="video/mp4",
        max_bytes=10**7,
        expected_length=len(data),
    )
    upload = fake.requests[0]
    assert upload.method == "POST"
    assert upload.url.raw_path == b"/storage/v1/object/output-videos/req%3A1/0.mp4"
    assert upload.headers["x-upsert"] == "true"
    assert upload.headers["authorization"] == f"Bearer {SECRET}"
    assert upload.headers["apikey"] == SECRET
    assert upload.headers["content-type"] == "video/mp4"
    assert upload.headers["content-length"] == str(len(data))
    assert fake.objects["req:1/0.mp4"][0] == data
    assert (
        stored.url
        == "https://proj.supabase.co/storage/v1/object/public/output-videos/req%3A1/0.mp4"
    )
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert SECRET not in repr(storage.__dict__)  # SecretStr keeps it out of reprs

    assert await storage.stat("req:1/0.mp4") == stored
    assert await storage.stat("other.mp4") is None
    assert await storage.open_local("req:1/0.mp4") is None
    await storage.aclose()


async def test_supabase_stat_hashes_foreign_object() -> None:
    fake = FakeSupabase()
    data = fake_mp4()
    fake.objects["foreign.mp4"] = (data, "video/mp4", {})  # uploaded without our metadata
    stat = await supabase(fake).stat("foreign.mp4")
    assert stat is not None and stat.sha256 == hashlib.sha256(data).hexdigest()
    assert stat.size_bytes == len(data)


async def test_supabase_invalid_video_never_uploads() -> None:
    fake = FakeSupabase()
    with pytest.raises(InvalidVideo, match="JSON"):
        await supabase(fake).put_stream(
            "a.mp4", chunks_of(b'{"error":"x"}' * 10), content_type="video/mp4", max_bytes=10**6
        )
    with pytest.raises(VideoTooLarge):
        await supabase(fake).put_stream(
            "a.mp4", chunks_of(fake_mp4(50_000)), content_type="video/mp4", max_bytes=10_000
        )
    with pytest.raises(ConnectionResetError):
        await supabase(fake).put_stream(
            "a.mp4", failing_after(fake_mp4(), 1000), content_type="video/mp4", max_bytes=10**6
        )
    assert fake.requests == []


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (413, False)])
async def test_supabase_errors_never_contain_the_key(status: int, retryable: bool) -> None:
    fake = FakeSupabase()
    fake.fail_with = status
    with pytest.raises(StorageError) as info:
        await supabase(fake).put_stream(
            "a.mp4", chunks_of(fake_mp4()), content_type="video/mp4", max_bytes=10**6
        )
    assert info.value.retryable is retryable
    assert info.value.status_code == status
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert f"HTTP {status}" in str(info.value)


async def test_supabase_transport_error_hides_details() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"failed for {request.headers['authorization']}")

    storage = SupabaseStorage(
        "https://p.supabase.co", SecretStr(SECRET), transport=httpx.MockTransport(boom)
    )
    with pytest.raises(StorageError) as info:
        await storage.stat("a.mp4")
    assert info.value.retryable
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# --- storage_from_url -------------------------------------------------------------------------


def test_from_url_file_relative_and_absolute(tmp_path: Path) -> None:
    rel = storage_from_url("file://.vidpipe/videos", base_dir=tmp_path)
    assert isinstance(rel, LocalFolderStorage)
    assert rel.root == (tmp_path / ".vidpipe" / "videos").resolve()
    absolute = storage_from_url(f"file://{tmp_path}/v")
    assert isinstance(absolute, LocalFolderStorage) and absolute.root == (tmp_path / "v").resolve()


@pytest.mark.parametrize(
    ("url", "env", "base", "bucket"),
    [
        ("supabase://vids@abc.supabase.co", {}, "https://abc.supabase.co", "vids"),
        ("supabase://vids@abcdefref", {}, "https://abcdefref.supabase.co", "vids"),
        ("supabase://vids@127.0.0.1:54321", {}, "http://127.0.0.1:54321", "vids"),
        ("supabase://@abc.supabase.co", {}, "https://abc.supabase.co", "output-videos"),
        ("supabase://vids", {"SUPABASE_URL": X_URL}, X_URL, "vids"),
        ("supabase://", {"SUPABASE_URL": X_URL + "/"}, X_URL, "output-videos"),
    ],
)
def test_from_url_supabase(url: str, env: dict[str, str], base: str, bucket: str) -> None:
    storage = storage_from_url(url, supabase_key=SecretStr(SECRET), environ=env)
    assert isinstance(storage, SupabaseStorage)
    assert (storage.base_url, storage.bucket) == (base, bucket)


def test_from_url_supabase_key_from_env() -> None:
    env = {"SUPABASE_SERVICE_ROLE_KEY": SECRET}
    storage = storage_from_url("supabase://b@h.example.com", environ=env)
    assert isinstance(storage, SupabaseStorage)


@pytest.mark.parametrize(
    ("url", "env"),
    [
        ("s3://bucket", {"SUPABASE_SERVICE_ROLE_KEY": SECRET}),
        ("file://", {}),
        ("supabase://b", {"SUPABASE_SERVICE_ROLE_KEY": SECRET}),  # no SUPABASE_URL
        ("supabase://b@h.example.com", {}),  # no key
        ("supabase://b@h.example.com/prefix", {"SUPABASE_SERVICE_ROLE_KEY": SECRET}),
        ("supabase://bad bucket@h.example.com", {"SUPABASE_SERVICE_ROLE_KEY": SECRET}),
    ],
)
def test_from_url_bad(url: str, env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        storage_from_url(url, environ=env)
    assert SECRET not in str(info.value)
