"""The official `supabase` Python client, unchanged, against the Storage API emulator.

Every call the seed's app and vidpipe make: buckets, upload with `x-upsert`, the public object,
signed URLs made and opened, list, remove; and the resumable (TUS) upload as Supabase's guide
describes it (create, PATCH, HEAD to resume), over plain HTTP.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import httpx
import pytest
from storage3.exceptions import StorageApiError

from supabase import Client, create_client
from vidpipe.dev.storage_emulator import StorageEmulator

KEY = "emulated-service-role-key"


@pytest.fixture(scope="module")
def emulator() -> Iterator[StorageEmulator]:
    with StorageEmulator(KEY) as server:
        yield server


@pytest.fixture
def client(emulator: StorageEmulator) -> Client:
    return create_client(emulator.url, KEY)


def _bucket(client: Client, *, public: bool) -> str:
    name = f"b-{uuid.uuid4().hex[:8]}"
    client.storage.create_bucket(name, options={"public": public})
    return name


def test_buckets_are_created_listed_read_and_deleted(client: Client) -> None:
    name = _bucket(client, public=True)
    assert name in [b.id for b in client.storage.list_buckets()]
    assert client.storage.get_bucket(name).public is True
    with pytest.raises(StorageApiError):
        client.storage.create_bucket(name)  # already there
    client.storage.from_(name).upload("x.txt", b"x")
    client.storage.empty_bucket(name)
    client.storage.delete_bucket(name)
    assert name not in [b.id for b in client.storage.list_buckets()]


def test_upload_needs_upsert_to_replace(client: Client) -> None:
    name = _bucket(client, public=True)
    files = client.storage.from_(name)
    files.upload("v/a.mp4", b"first", {"content-type": "video/mp4"})
    with pytest.raises(StorageApiError) as info:
        files.upload("v/a.mp4", b"second")
    assert str(info.value.status) == "409"
    files.upload("v/a.mp4", b"second", {"upsert": "true", "content-type": "video/mp4"})
    assert files.download("v/a.mp4") == b"second"
    info_body = files.info("v/a.mp4")
    assert info_body["size"] == len(b"second") and info_body["content_type"] == "video/mp4"


def test_a_public_object_is_read_without_a_key(client: Client) -> None:
    public, private = _bucket(client, public=True), _bucket(client, public=False)
    for bucket in (public, private):
        client.storage.from_(bucket).upload("o.bin", b"data")
    assert httpx.get(client.storage.from_(public).get_public_url("o.bin")).content == b"data"
    assert httpx.get(client.storage.from_(private).get_public_url("o.bin")).status_code == 400


def test_signed_urls_open_the_object_until_they_expire(client: Client) -> None:
    name = _bucket(client, public=False)
    files = client.storage.from_(name)
    files.upload("s/1.bin", b"one")
    files.upload("s/2.bin", b"two")
    signed = files.create_signed_url("s/1.bin", 60)["signedURL"]
    assert signed is not None
    assert httpx.get(signed).content == b"one"
    assert httpx.get(signed.replace("s/1.bin", "s/2.bin")).status_code == 400  # token is per path
    many = files.create_signed_urls(["s/1.bin", "s/2.bin"], 60)
    assert [httpx.get(str(item["signedURL"])).content for item in many] == [b"one", b"two"]


def test_list_and_remove(client: Client) -> None:
    name = _bucket(client, public=True)
    files = client.storage.from_(name)
    for path in ("r1/0.mp4", "r1/1.mp4", "r2/0.mp4"):
        files.upload(path, b"v")
    assert [e["name"] for e in files.list()] == ["r1", "r2"]
    assert [e["name"] for e in files.list("r1")] == ["0.mp4", "1.mp4"]
    removed = files.remove(["r1/0.mp4", "nothing.mp4"])
    assert [r["name"] for r in removed] == ["r1/0.mp4"]
    assert [e["name"] for e in files.list("r1")] == ["1.mp4"]
    assert files.exists("r1/0.mp4") is False and files.exists("r1/1.mp4") is True


def test_the_resumable_upload_creates_patches_and_resumes(
    client: Client, emulator: StorageEmulator
) -> None:
    name = _bucket(client, public=True)
    data = bytes(range(256)) * 1000
    headers = {"Authorization": f"Bearer {KEY}", "apikey": KEY, "Tus-Resumable": "1.0.0"}

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    meta = f"bucketName {b64(name)},objectName {b64('t/big.bin')},contentType {b64('video/mp4')}"
    with httpx.Client() as http:
        created = http.post(
            f"{emulator.url}/storage/v1/upload/resumable",
            headers={**headers, "Upload-Length": str(len(data)), "Upload-Metadata": meta},
        )
        assert created.status_code == 201
        location = created.headers["location"]
        patch = {**headers, "Content-Type": "application/offset+octet-stream"}
        first = http.patch(
            location, headers={**patch, "Upload-Offset": "0"}, content=data[:100_000]
        )
        assert first.status_code == 204 and first.headers["upload-offset"] == "100000"
        wrong = http.patch(location, headers={**patch, "Upload-Offset": "0"}, content=data[:10])
        assert wrong.status_code == 409  # not where the server is: the client must ask
        offset = int(http.head(location, headers=headers).headers["upload-offset"])
        assert offset == 100_000
        rest = http.patch(
            location, headers={**patch, "Upload-Offset": str(offset)}, content=data[offset:]
        )
        assert rest.status_code == 204
    assert client.storage.from_(name).download("t/big.bin") == data
