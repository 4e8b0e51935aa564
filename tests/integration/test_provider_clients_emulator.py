"""Both provider clients against the real emulator over loopback HTTP (no mocks on either side).

What every client does (create, poll, download, a missing download, a wrong key, 429, content
policy) is the provider contract, tests/contracts/test_provider_backends.py; these are the cases
particular to one protocol or to the retry policy.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_none

from schemas.events import DownloadUnavailable, JobSucceeded, VideoStored
from services.fetcher.handlers import FetcherDeps, handle_job_succeeded
from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.errors import InvalidVideo, NotFound, RateLimited
from vidpipe.providers import (
    AzureSoraConfig,
    InputImage,
    OpenAIVideosConfig,
    ProviderClient,
    ProviderConfig,
    ProviderJob,
    RetryPolicy,
    VideoSpec,
    build_provider,
)
from vidpipe.storage import LocalFolderStorage
from vidpipe.testing import MemoryPublisher
from vidpipe.usecases.fetch_video import DownloadPolicy

KEY = "emulator-test-key-5f3a"
# 100x: the emulated ~7 s schedule takes ~70 ms of real time.
TIME_SCALE = 100.0


class Sleeps:
    """Injected into RetryPolicy so retries are recorded, not waited."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(
        api_key=KEY,  # pydantic coerces str to SecretStr
        time_scale=TIME_SCALE,
        max_concurrent_jobs=None,
        deployments=["sora", "sora-2"],
    )
    async with EmulatorServer(config) as server:
        yield server


def config_for(server: EmulatorServer, name: str, *, deployment: str = "sora") -> ProviderConfig:
    if name == "azure-sora":
        return AzureSoraConfig(endpoint=server.azure_endpoint, api_key=KEY, deployment=deployment)
    return OpenAIVideosConfig(base_url=server.openai_base_url, api_key=KEY)


def client_for(server: EmulatorServer, name: str, **kwargs: Any) -> ProviderClient:
    return build_provider(name, config_for(server, name), timeout_s=10.0, **kwargs)


def png(width: int, height: int) -> bytes:
    """A valid greyscale PNG, built by hand so the test needs no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def poll_until_terminal(client: ProviderClient, job_id: str) -> ProviderJob:
    deadline = asyncio.get_running_loop().time() + 20.0
    while True:
        job = await client.get_job(job_id)
        if job.terminal:
            return job
        assert asyncio.get_running_loop().time() < deadline, f"job stuck in {job.raw_status}"
        # Honour the provider's hint, but keep the test quick.
        await asyncio.sleep(min(job.poll_after_s or 0.02, 0.05))


async def download_bytes(client: ProviderClient, job: ProviderJob) -> bytes:
    async with client.download(job.job_id, job.generation_ids[0]) as video:
        assert video.content_type.startswith("video/mp4")
        data = b"".join([chunk async for chunk in video.chunks])
        if video.content_length is not None:
            assert video.content_length == len(data)
    return data


@pytest.mark.parametrize("name", ["azure-sora", "openai-videos"])
async def test_same_idempotency_key_returns_the_same_job(
    emulator: EmulatorServer, name: str
) -> None:
    client = client_for(emulator, name)
    try:
        spec = VideoSpec(prompt="one job only", seconds=4, width=1280, height=720)
        first = await client.create_job(spec, idempotency_key="it-same")
        again = await client.create_job(spec, idempotency_key="it-same")
        assert first.job_id == again.job_id
    finally:
        await client.aclose()


async def test_azure_image_input(emulator: EmulatorServer) -> None:
    client = client_for(emulator, "azure-sora")
    try:
        image = InputImage(data=png(64, 36), content_type="image/png", filename="start.png")
        spec = VideoSpec(prompt="animate this", width=1280, height=720, seconds=5, image=image)
        created = await client.create_job(spec, idempotency_key="it-img")
        job = await poll_until_terminal(client, created.job_id)
        assert job.status == "succeeded"
        assert (await download_bytes(client, job))[4:8] == b"ftyp"
    finally:
        await client.aclose()


async def test_openai_image_input(emulator: EmulatorServer) -> None:
    client = client_for(emulator, "openai-videos")
    try:
        # The protocol wants the reference image to match `size` exactly.
        image = InputImage(data=png(1280, 720), content_type="image/png", filename="ref.png")
        spec = VideoSpec(prompt="animate this", width=1280, height=720, seconds=4, image=image)
        created = await client.create_job(spec, idempotency_key="it-img")
        job = await poll_until_terminal(client, created.job_id)
        assert job.status == "succeeded"
    finally:
        await client.aclose()


@pytest.mark.parametrize("name", ["azure-sora", "openai-videos"])
async def test_a_json_body_is_never_handed_over_as_a_video(
    emulator: EmulatorServer, name: str
) -> None:
    client = client_for(emulator, name)
    try:
        spec = VideoSpec(prompt="a storm [emulator:download=json_body]", seconds=4)
        created = await client.create_job(spec, idempotency_key="it-json-body")
        job = await poll_until_terminal(client, created.job_id)
        assert job.status == "succeeded"
        with pytest.raises(InvalidVideo):
            async with client.download(job.job_id, job.generation_ids[0]):
                pytest.fail("must not yield a download")
    finally:
        await client.aclose()


async def test_azure_wrong_deployment_is_a_clear_not_found(emulator: EmulatorServer) -> None:
    config = config_for(emulator, "azure-sora", deployment="no-such-deployment")
    client = build_provider("azure-sora", config)
    try:
        with pytest.raises(NotFound) as info:
            await client.create_job(VideoSpec(prompt="p"), idempotency_key="it-dep")
        assert "'no-such-deployment'" in str(info.value)
        assert KEY not in str(info.value)
    finally:
        await client.aclose()


@pytest.mark.parametrize("name", ["azure-sora", "openai-videos"])
async def test_rate_limit_retries_honour_retry_after_then_give_up(
    emulator: EmulatorServer, name: str
) -> None:
    sleeps = Sleeps()
    client = client_for(emulator, name, retry=RetryPolicy(attempts=3, sleep=sleeps))
    try:
        with pytest.raises(RateLimited) as info:
            await client.create_job(
                VideoSpec(prompt="busy [emulator:rate_limit]", seconds=4), idempotency_key="it-429"
            )
        assert info.value.retry_after is not None
        assert len(sleeps.waits) == 2
        assert all(w == pytest.approx(info.value.retry_after, abs=1.0) for w in sleeps.waits)
    finally:
        await client.aclose()


# --- the fetcher against hostile downloads -----------------------------------------------------


async def fetch_through_the_fetcher(
    server: EmulatorServer,
    prompt: str,
    storage: LocalFolderStorage,
    *,
    policy: DownloadPolicy | None = None,
) -> MemoryPublisher:
    """Create and finish a job on the emulator, then hand its JobSucceeded to the fetcher."""
    client = client_for(server, "azure-sora")
    try:
        created = await client.create_job(
            VideoSpec(prompt=prompt, seconds=4), idempotency_key=prompt
        )
        job = await poll_until_terminal(client, created.job_id)
        assert job.status == "succeeded"
        publisher = MemoryPublisher()
        deps = FetcherDeps(
            providers={"azure-sora": client},
            storage=storage,
            publisher=publisher,
            download=policy or DownloadPolicy(attempts=2, wait=wait_none()),
        )
        event = JobSucceeded(
            event_id=uuid.uuid4(),
            request_id="r-hostile",
            provider="azure-sora",
            provider_job_id=job.job_id,
            generation_ids=list(job.generation_ids),
        )
        await handle_job_succeeded(event, deps)
        return publisher
    finally:
        await client.aclose()


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def unavailable(publisher: MemoryPublisher) -> DownloadUnavailable:
    assert not publisher.of_type(VideoStored)
    (event,) = publisher.of_type(DownloadUnavailable)
    assert isinstance(event, DownloadUnavailable)
    return event


async def test_a_redirect_to_the_metadata_address_is_refused(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused even with the development allowance: link-local is never reachable.
    monkeypatch.setenv("VIDPIPE_ALLOW_PRIVATE_URLS", "true")
    storage = LocalFolderStorage(tmp_path)
    publisher = await fetch_through_the_fetcher(
        emulator, "a cat [emulator:download=redirect]", storage
    )
    event = unavailable(publisher)
    assert event.reason_code == "download_unavailable"
    assert "redirect refused" in event.message and "169.254.169.254" in event.message
    assert "link-local" in event.message
    assert stored_files(tmp_path) == []
    assert emulator.state.stats["azure.content_requests"] == 1  # terminal: asked once, no retry


@pytest.mark.parametrize(
    ("redirect_url", "reason"),
    [
        ("http://10.1.2.3/video.mp4", "scheme 'http' is not allowed"),
        ("https://10.1.2.3/video.mp4", "non-public address"),
        ("https://127.0.0.1:1/video.mp4", "non-public address"),
        ("https://[::ffff:169.254.169.254]/latest/meta-data/", "non-public address"),
        ("https://metadata.google.internal/computeMetadata/v1/", "not allowed"),
        ("https://ex\u00e4mple..com/video.mp4", "redirect refused"),  # sent percent-encoded
    ],
)
async def test_every_unsafe_redirect_is_refused_before_it_is_followed(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redirect_url: str,
    reason: str,
) -> None:
    monkeypatch.delenv("VIDPIPE_ALLOW_PRIVATE_URLS", raising=False)
    emulator.update_config(download_redirect_url=redirect_url)
    publisher = await fetch_through_the_fetcher(
        emulator, "a cat [emulator:download=redirect]", LocalFolderStorage(tmp_path)
    )
    event = unavailable(publisher)
    assert event.reason_code == "download_unavailable"
    assert reason in event.message
    assert stored_files(tmp_path) == []


async def test_a_truncated_mp4_is_refused(emulator: EmulatorServer, tmp_path: Path) -> None:
    storage = LocalFolderStorage(tmp_path)
    publisher = await fetch_through_the_fetcher(
        emulator, "a cat [emulator:download=truncated]", storage
    )
    event = unavailable(publisher)
    assert event.reason_code == "invalid_content"
    assert "ends inside box 'mdat'" in event.message
    assert stored_files(tmp_path) == []


async def test_a_redirect_within_the_endpoint_origin_is_followed(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    emulator.update_config(download_redirect_url="/_emulator/sample.mp4")
    storage = LocalFolderStorage(tmp_path)
    publisher = await fetch_through_the_fetcher(
        emulator, "a cat [emulator:download=redirect]", storage
    )
    (stored,) = publisher.of_type(VideoStored)
    assert isinstance(stored, VideoStored)
    assert stored.size_bytes == len(await emulator.state.sample_video())


async def test_a_redirect_to_another_loopback_origin_needs_the_development_allowance(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with EmulatorServer(EmulatorConfig(api_key=KEY)) as blobs:
        emulator.update_config(download_redirect_url=f"{blobs.base_url}/_emulator/sample.mp4")
        monkeypatch.delenv("VIDPIPE_ALLOW_PRIVATE_URLS", raising=False)
        refused = await fetch_through_the_fetcher(
            emulator, "a cat [emulator:download=redirect]", LocalFolderStorage(tmp_path / "a")
        )
        event = unavailable(refused)
        assert event.reason_code == "download_unavailable"
        assert "redirect refused" in event.message
        monkeypatch.setenv("VIDPIPE_ALLOW_PRIVATE_URLS", "true")
        allowed = await fetch_through_the_fetcher(
            emulator, "a dog [emulator:download=redirect]", LocalFolderStorage(tmp_path / "b")
        )
        assert len(allowed.of_type(VideoStored)) == 1


async def test_a_download_past_its_deadline_is_a_transient_failure(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    # 500 emulated seconds at 100x: the body trickles for 5 s; the deadline is 0.5 s.
    storage = LocalFolderStorage(tmp_path)
    started = asyncio.get_running_loop().time()
    publisher = await fetch_through_the_fetcher(
        emulator,
        "a cat [emulator:download_seconds=500]",
        storage,
        policy=DownloadPolicy(attempts=3, wait=wait_none(), deadline_s=0.5),
    )
    event = unavailable(publisher)
    assert event.reason_code == "transient_error"
    assert "within 0.5s" in event.message
    assert asyncio.get_running_loop().time() - started < 4.0  # cut off, not waited out
    assert stored_files(tmp_path) == []
