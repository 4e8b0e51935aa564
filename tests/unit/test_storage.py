"""Backend-specific storage tests: key rules, the local folder's files, Supabase's requests, URLs.

What every backend promises (put, stat, validation, idempotency) is the contract in
tests/contracts/storage_contract.py, run against each backend by test_storage_backends.py there.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import string
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from schemas.events import REQUEST_ID_MAX_CHARS, GenerationRequested
from services.placeholder.handlers import placeholder_key
from tests.contracts.samples import chunks_of, failing_after, fake_mp4
from tests.contracts.storage_contract import INVALID_KEYS
from vidpipe.errors import ConfigurationError, InvalidVideo, VideoTooLarge
from vidpipe.settings import Settings
from vidpipe.stage import open_storage
from vidpipe.storage import (
    LocalFolderStorage,
    StorageError,
    SupabaseStorage,
    storage_from_url,
    validate_key,
)
from vidpipe.storage.base import MAX_SEGMENT_CHARS, key_segment
from vidpipe.testing import FakeSupabaseObject, FakeSupabaseStorage
from vidpipe.usecases.fetch_video import video_key

SECRET = "service-role-secret-value-123"
X_URL = "https://x.supabase.co"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["a.mp4", "req-1/0.mp4", "proj:1/req_2/variant-0.mp4", "a/b/c/d.mov", "v1..2.mp4"]
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)


# --- keys made from ids ------------------------------------------------------------------------

# Supabase Storage's own key rule (storage-api `isValidKey`, S3's safe characters) and S3's
# 1024-byte limit: every key vidpipe makes must pass it.
SUPABASE_KEY_RE = re.compile(r"^(\w|/|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)*$", re.ASCII)

NASTY_IDS = [
    "",
    ".",
    "..",
    "...",
    "/",
    "../../etc/passwd",
    "a/../b",
    "a/b",
    "\\server\\share",
    "x.json",
    "x.tmp",
    "gen:1",
    "gen 1",
    "\x00",
    "nul\x00inside",
    "\n\r\t",
    "é",
    "视频生成",
    "😀" * 100,
    "\ud800",
    "-",
    "_" * 400,
    "a" * 196,
    "a" * 197,
    "a" * 255,
    "a" * 256,
    "a" * 10_000,
    "." * 300,
    "%2e%2e",
    "CON",
    "gen_01jq4yzv3xkq" * 30,
]


def random_ids(count: int, seed: int) -> list[str]:
    """Strings of every kind: the id alphabet, dots, separators, controls, non-ASCII, surrogates."""
    rng = random.Random(seed)
    alphabets = [
        string.ascii_letters + string.digits + "._:-",
        "./",
        string.printable,
        "".join(map(chr, range(32))) + "\x7f",
        "éß视频😀\u202e\ufeff\ud800\udfff",
    ]
    ids = []
    for _ in range(count):
        alphabet = "".join(rng.sample(alphabets, rng.randint(1, len(alphabets))))
        ids.append("".join(rng.choice(alphabet) for _ in range(rng.choice([1, 5, 60, 255, 700]))))
    return ids


def assert_storable(key: str) -> None:
    assert validate_key(key) == key, key
    assert SUPABASE_KEY_RE.fullmatch(key) and len(key.encode()) <= 1024, key
    assert all(len(part.encode()) <= 255 - 20 for part in key.split("/")), key


def valid_request_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "._:-" + "." * 20  # dot-heavy on purpose
    ids = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, REQUEST_ID_MAX_CHARS)))
        for _ in range(count)
    ]
    return [i for i in ids if i.strip(".")] + ["a" * REQUEST_ID_MAX_CHARS, ".a.", "v1..2"]


def test_video_keys_are_storable_for_any_generation_id() -> None:
    for generation_id in NASTY_IDS + random_ids(500, seed=8):
        for request_id in ("req-1", "." * 127 + "a", "a" * REQUEST_ID_MAX_CHARS):
            for index in (0, 15):
                key = video_key(request_id, index, generation_id)
                assert_storable(key)
                assert key == video_key(request_id, index, generation_id), "the same every time"


def test_any_text_becomes_a_segment_and_distinct_texts_stay_distinct() -> None:
    texts = NASTY_IDS + random_ids(1000, seed=3)
    for text in texts:
        segment = key_segment(text)
        assert_storable(f"{segment}/x.mp4")
        assert "/" not in segment and segment.strip(".")
    assert len({key_segment(t) for t in texts}) == len(set(texts))


def test_every_request_id_the_schema_accepts_is_its_own_key_segment() -> None:
    ids = valid_request_ids(2000, seed=1)
    for request_id in ids:
        GenerationRequested(request_id=request_id, prompt="p")  # the schema accepts it...
        assert_storable(placeholder_key(request_id))  # ...and storage does too
        assert placeholder_key(request_id) == f"{request_id}/placeholder.mp4"
        assert video_key(request_id, 0, "gen_1") == f"{request_id}/0-gen_1.mp4"
    assert len({placeholder_key(i) for i in ids}) == len(set(ids))


def test_short_generation_ids_keep_the_keys_they_always_had() -> None:
    assert video_key("r", 0, "gen_01jq") == "r/0-gen_01jq.mp4"
    assert video_key("r", 1, "gen:01/jq") == "r/1-gen_01_jq.mp4"
    long_key = video_key("r", 0, "g" * 1000)
    assert long_key.startswith("r/0-ggg") and len(long_key) <= 2 + MAX_SEGMENT_CHARS
    assert long_key != video_key("r", 0, "g" * 1001)


@pytest.mark.parametrize(
    "generation_id", ["g" * 10_000, "😀" * 300, "../" * 100, "x.json", "\x00" * 5]
)
async def test_the_local_folder_stores_under_keys_of_absurd_ids(
    tmp_path: Path, generation_id: str
) -> None:
    storage = LocalFolderStorage(tmp_path)
    request_id = "." * (REQUEST_ID_MAX_CHARS - 1) + "a"
    key = video_key(request_id, 0, generation_id)
    data = fake_mp4()
    stored = await storage.put_stream(
        key, chunks_of(data), content_type="video/mp4", max_bytes=10**6
    )
    assert await storage.stat(key) == stored
    assert (tmp_path / key).read_bytes() == data
    assert files_under(tmp_path) == [key, f"{key}.json"]


def test_keys_with_overlong_segments_are_refused() -> None:
    assert validate_key("a" * MAX_SEGMENT_CHARS + "/b.mp4")
    with pytest.raises(ValueError, match="at most"):
        validate_key("a" * (MAX_SEGMENT_CHARS + 1) + "/b.mp4")


# --- local folder -----------------------------------------------------------------------------


async def test_local_files_are_the_video_and_its_sidecar(tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path / "videos")
    data = fake_mp4()
    stored = await storage.put_stream(
        "req-1/0.mp4", chunks_of(data, 7), content_type="video/mp4", max_bytes=10**6
    )
    path = tmp_path / "videos" / "req-1" / "0.mp4"
    assert path.read_bytes() == data
    assert stored.url == path.resolve().as_uri() and stored.url.startswith("file:///")
    assert await storage.open_local("req-1/0.mp4") == path.resolve()
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


@pytest.mark.parametrize("torn", [b"", b'{"size_bytes": 12', b"\x00" * 64])
async def test_local_stat_recomputes_from_a_torn_sidecar(tmp_path: Path, torn: bytes) -> None:
    # The sidecar is written without fsync: after a crash it may be empty or cut short.
    storage = LocalFolderStorage(tmp_path)
    stored = await storage.put_stream(
        "k.mp4", chunks_of(fake_mp4()), content_type="video/mp4", max_bytes=10**6
    )
    (tmp_path / "k.mp4.json").write_bytes(torn)
    assert await storage.stat("k.mp4") == stored


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


async def test_local_failures_leave_no_temp_files(tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path)
    data = fake_mp4(payload_size=3 * 1024 * 1024)  # several write batches
    with pytest.raises(ConnectionResetError):
        await storage.put_stream(
            "r/0.mp4",
            failing_after(data, 2 * 1024 * 1024),
            content_type="video/mp4",
            max_bytes=10**8,
        )
    with pytest.raises(VideoTooLarge):
        await storage.put_stream(
            "r/0.mp4", chunks_of(data), content_type="video/mp4", max_bytes=10_000
        )
    with pytest.raises(InvalidVideo):
        await storage.put_stream(
            "r/0.mp4", chunks_of(b'{"error": "x"}' * 10), content_type="video/mp4", max_bytes=10**6
        )
    assert files_under(tmp_path) == []
    first = await storage.put_stream(
        "v.mp4", chunks_of(fake_mp4()), content_type="video/mp4", max_bytes=10**6
    )
    with pytest.raises(ConnectionResetError):
        await storage.put_stream(
            "v.mp4", failing_after(fake_mp4(9000), 4000), content_type="video/mp4", max_bytes=10**6
        )
    assert files_under(tmp_path) == ["v.mp4", "v.mp4.json"]
    assert await storage.stat("v.mp4") == first


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


def supabase(fake: FakeSupabaseStorage) -> SupabaseStorage:
    return fake.storage("https://proj.supabase.co/")


async def test_supabase_upload_request() -> None:
    fake = FakeSupabaseStorage(SECRET)
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
    assert upload.url.raw_path == b"/storage/v1/object/output-videos/req:1/0.mp4"
    assert upload.headers["x-upsert"] == "true"
    assert upload.headers["authorization"] == f"Bearer {SECRET}"
    assert upload.headers["apikey"] == SECRET
    # The supabase client sends a form (cacheControl, metadata, the file part).
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert fake.objects["req:1/0.mp4"].content_type == "video/mp4"
    assert fake.objects["req:1/0.mp4"].data == data
    assert fake.objects["req:1/0.mp4"].metadata == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
    }
    assert (
        stored.url
        == "https://proj.supabase.co/storage/v1/object/public/output-videos/req%3A1/0.mp4"
    )
    assert SECRET not in repr(storage.__dict__)  # SecretStr keeps it out of reprs
    assert await storage.open_local("req:1/0.mp4") is None
    await storage.aclose()


async def test_supabase_stat_hashes_foreign_object() -> None:
    fake = FakeSupabaseStorage(SECRET)
    data = fake_mp4()
    # Uploaded by something else, without our metadata: stat downloads and hashes it.
    fake.objects["foreign.mp4"] = FakeSupabaseObject(data, "video/mp4")
    fake.objects["junk.mp4"] = FakeSupabaseObject(b"<html>not a video</html>", "video/mp4")
    storage = supabase(fake)
    stat = await storage.stat("foreign.mp4")
    assert stat is not None and stat.sha256 == hashlib.sha256(data).hexdigest()
    assert stat.size_bytes == len(data)
    assert await storage.stat("junk.mp4") is None
    await storage.aclose()


async def test_supabase_invalid_video_never_uploads() -> None:
    fake = FakeSupabaseStorage(SECRET)
    storage = supabase(fake)
    with pytest.raises(InvalidVideo, match="JSON"):
        await storage.put_stream(
            "a.mp4", chunks_of(b'{"error":"x"}' * 10), content_type="video/mp4", max_bytes=10**6
        )
    with pytest.raises(VideoTooLarge):
        await storage.put_stream(
            "a.mp4", chunks_of(fake_mp4(50_000)), content_type="video/mp4", max_bytes=10_000
        )
    with pytest.raises(ConnectionResetError):
        await storage.put_stream(
            "a.mp4", failing_after(fake_mp4(), 1000), content_type="video/mp4", max_bytes=10**6
        )
    assert fake.requests == []
    await storage.aclose()


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (413, False)])
async def test_supabase_errors_never_contain_the_key(status: int, retryable: bool) -> None:
    fake = FakeSupabaseStorage(SECRET)
    fake.fail_with = status
    with pytest.raises(StorageError) as info:
        await supabase(fake).put_stream(
            "a.mp4", chunks_of(fake_mp4()), content_type="video/mp4", max_bytes=10**6
        )
    assert info.value.retryable is retryable
    assert info.value.status_code == status
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert f"HTTP {status}" in str(info.value)


async def test_supabase_wrong_key_is_an_error_not_a_missing_object() -> None:
    fake = FakeSupabaseStorage(SECRET)
    storage = SupabaseStorage(
        "https://proj.supabase.co", SecretStr("not-the-key"), transport=fake.transport
    )
    with pytest.raises(StorageError) as info:
        await storage.stat("a.mp4")
    assert info.value.status_code == 400 and not info.value.retryable
    await storage.aclose()


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


async def test_a_stage_opens_supabase_with_the_configured_bucket_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SECRET)
    settings = Settings(
        storage_url="supabase://vids@h.example.com",
        supabase_public_bucket=False,
        supabase_signed_url_ttl_s=600,
        supabase_tus_threshold_bytes=1024,
    )
    storage = open_storage(settings)
    assert isinstance(storage, SupabaseStorage)
    assert (storage.public, storage.signed_url_ttl_s, storage.tus_threshold_bytes) == (
        False,
        600,
        1024,
    )
    await storage.aclose()
