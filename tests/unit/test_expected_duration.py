"""A stored video lasts about what was asked: the emulator serves the asked length, the
clients send the request's seconds unchanged, and the store path refuses a wrong length."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from tenacity import wait_none

from schemas.events import (
    DownloadUnavailable,
    JobSucceeded,
    RequestSnapshot,
    SentRequest,
    VideoStored,
)
from services.fetcher.handlers import FetcherDeps, handle_job_succeeded
from vidpipe.dev.emulator import EmulatorConfig, EmulatorState, create_app, parse_directives
from vidpipe.dev.emulator.state import (
    DEFAULT_SAMPLE_SECONDS,
    SAMPLE_FRAME_BUDGET,
    Job,
    sample_fps,
)
from vidpipe.errors import DirectiveError, InvalidVideo
from vidpipe.media.sample import probe_first_frame, probe_mp4, render_sample_mp4
from vidpipe.providers import AzureSoraClient, OpenAIVideosClient, ProviderClient, VideoSpec
from vidpipe.storage import LocalFolderStorage, StoredObject, VideoStorage
from vidpipe.testing import FakeProvider, FakeSupabaseStorage, MemoryPublisher, MemoryStorage
from vidpipe.usecases.fetch_video import DownloadPolicy, expected_seconds

KEY = "emulator-key"
BASE = "http://emulator.test"


# --- the emulator's video lengths ---------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "fps", "want"),
    [(1, 24, 24), (5, 24, 24), (8, 24, 15), (12, 24, 10), (20, 24, 6), (60, 24, 2), (0.5, 24, 24)],
)
def test_longer_samples_get_fewer_frames_per_second(seconds: float, fps: int, want: int) -> None:
    assert sample_fps(seconds, fps) == want
    assert round(seconds * want) <= max(SAMPLE_FRAME_BUDGET, fps)


def test_the_frame_rate_never_drops_below_one() -> None:
    assert sample_fps(600, 24) == 1
    assert sample_fps(4, 1) == 1  # a configured 1 fps stays 1


def _job(state: EmulatorState, prompt: str = "a fox", seconds: int = 8) -> Job:
    return state.create_job(
        protocol="azure",
        owner="o",
        prompt=prompt,
        model="sora",
        width=480,
        height=480,
        seconds=seconds,
        n_variants=1,
        directives=parse_directives(prompt, "azure"),
    )


def test_a_job_video_lasts_what_the_job_asked_unless_told_otherwise() -> None:
    state = EmulatorState(EmulatorConfig())
    assert EmulatorConfig().video_seconds is None
    asked = _job(state, seconds=8)
    forced = _job(state, "a fox [emulator:video_seconds=2.5]", seconds=8)
    assert state.video_seconds(asked) == 8.0
    assert state.video_seconds(forced) == 2.5
    assert state.video_seconds() == DEFAULT_SAMPLE_SECONDS  # the bare sample video
    state.set_config(EmulatorConfig(video_seconds=3))
    # The config forces every job's length; a job's own directive still wins.
    assert (state.video_seconds(asked), state.video_seconds(forced), state.video_seconds()) == (
        3.0,
        2.5,
        3.0,
    )


@pytest.mark.parametrize("raw", ["0", "-1", "61", "abc", "", "nan"])
def test_a_bad_video_seconds_directive_is_refused(raw: str) -> None:
    with pytest.raises(DirectiveError, match="video_seconds"):
        parse_directives(f"a fox [emulator:video_seconds={raw}]")


def test_the_video_seconds_directive_can_target_one_protocol() -> None:
    prompt = "a fox [emulator:openai.video_seconds=1]"
    assert parse_directives(prompt, "openai").video_seconds == 1.0
    assert parse_directives(prompt, "azure").video_seconds is None


def test_a_forced_config_length_is_bounded() -> None:
    with pytest.raises(ValueError, match="video_seconds"):
        EmulatorConfig(video_seconds=61)


async def test_the_served_video_lasts_the_asked_length_and_is_encoded_once() -> None:
    state = EmulatorState(EmulatorConfig())
    job = _job(state, seconds=12)
    started = time.perf_counter()
    first = await state.served_video(job, "ok")
    encode_s = time.perf_counter() - started
    info = probe_mp4(first)
    assert info["duration"] == pytest.approx(12.0, abs=0.05)
    assert info["fps"] == pytest.approx(sample_fps(12, 24))
    assert info["frames"] <= SAMPLE_FRAME_BUDGET
    # Cached per (width, height, seconds, fps): the same bytes object, no second encode.
    again = _job(state, seconds=12)
    assert await state.served_video(again, "ok") is first
    truncated = await state.served_video(again, "truncated")
    assert 0 < len(truncated) < len(first) and first.startswith(truncated)
    print(f"12 s sample at {info['fps']:g} fps: {len(first)} bytes, {encode_s * 1000:.0f} ms")


# --- what vidpipe expects -------------------------------------------------------------------


def test_the_expected_length_is_the_requests_seconds() -> None:
    assert expected_seconds(RequestSnapshot(prompt="p", seconds=12)) == 12.0
    assert expected_seconds(RequestSnapshot(prompt="p")) == 5.0  # the request's default
    assert expected_seconds(None) is None  # unknown: only a positive duration is required


def test_the_sent_length_is_expected_unless_the_provider_picks_it() -> None:
    mapped = SentRequest(seconds=4, size="1280x720")
    omni = SentRequest(seconds=5, size="1280x720", length_checked=False)
    assert expected_seconds(RequestSnapshot(prompt="p", seconds=5, sent=mapped)) == 4.0
    assert expected_seconds(RequestSnapshot(prompt="p", seconds=5, sent=omni)) is None


@pytest.fixture
def emulator() -> Iterator[EmulatorState]:
    # A zero schedule: a job is done as soon as it is created.
    config = EmulatorConfig(
        api_key=KEY,
        queued_seconds=0,
        preprocessing_seconds=0,
        running_seconds=0,
        processing_seconds=0,
    )
    yield EmulatorState(config)


def _client(provider: str, state: EmulatorState) -> ProviderClient:
    transport = httpx.ASGITransport(app=create_app(state))
    if provider == "azure-sora":
        return AzureSoraClient(endpoint=BASE, api_key=KEY, deployment="sora", transport=transport)
    return OpenAIVideosClient(
        base_url=f"{BASE}/v1", api_key=KEY, model="sora-2", transport=transport
    )


@pytest.mark.parametrize(
    ("provider", "seconds", "size"),
    [("azure-sora", 3, "480x480"), ("openai-videos", 8, "1280x720")],
)
async def test_the_clients_ask_for_the_length_the_fetcher_expects(
    emulator: EmulatorState, provider: str, seconds: int, size: str
) -> None:
    """The whole chain in process: request -> client -> emulator job -> served video -> check."""
    request = RequestSnapshot(prompt="a fox", seconds=seconds, size=size)
    width, height = (int(part) for part in size.split("x"))
    client = _client(provider, emulator)
    try:
        # As the submitter builds it: the request's seconds go into the spec as they are.
        spec = VideoSpec(prompt=request.prompt, width=width, height=height, seconds=seconds)
        created = await client.create_job(spec, idempotency_key=f"k-{provider}")
        (job,) = emulator.jobs.values()
        assert job.seconds == expected_seconds(request)
        done = await client.get_job(created.job_id)
        assert done.status == "succeeded"
        publisher = MemoryPublisher()
        storage = MemoryStorage()
        deps = FetcherDeps(
            providers={provider: client},
            storage=storage,
            publisher=publisher,
            download=DownloadPolicy(attempts=1, wait=wait_none()),
        )
        await handle_job_succeeded(
            _succeeded(provider, done.job_id, done.generation_ids, request), deps
        )
        (stored,) = publisher.of_type(VideoStored)
        assert isinstance(stored, VideoStored)
        (key,) = storage.keys()
        data = storage.read(key)
        assert data is not None
        assert probe_mp4(data)["duration"] == pytest.approx(seconds, abs=0.05)
    finally:
        await client.aclose()


def _succeeded(
    provider: str, job_id: str, generation_ids: list[str], request: RequestSnapshot | None
) -> JobSucceeded:
    return JobSucceeded(
        event_id=uuid.uuid4(),
        request_id="r-duration",
        provider=provider,
        provider_job_id=job_id,
        generation_ids=generation_ids or [job_id],  # /v1/videos: the video id is the generation
        request=request,
    )


# --- the store path refuses a wrong length ---------------------------------------------------


@pytest.fixture(params=["local", "supabase", "memory"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VideoStorage]:
    backend: VideoStorage
    if request.param == "local":
        backend = LocalFolderStorage(tmp_path / "videos")
    elif request.param == "supabase":
        backend = FakeSupabaseStorage().storage()
    else:
        backend = MemoryStorage()
    yield backend
    await backend.aclose()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


TWO_SECONDS = render_sample_mp4(64, 48, seconds=2, fps=8)


@pytest.mark.parametrize(("asked", "ok"), [(None, True), (2, True), (3, True), (4, False)])
async def test_every_backend_checks_the_length_it_is_given(
    storage: VideoStorage, asked: float | None, ok: bool
) -> None:
    async def put() -> StoredObject:
        return await storage.put_stream(
            "r/0-gen.mp4",
            _chunks(TWO_SECONDS),
            content_type="video/mp4",
            max_bytes=10**6,
            expected_seconds=asked,
        )

    if ok:
        stored = await put()
        assert await storage.stat("r/0-gen.mp4") == stored
        return
    with pytest.raises(InvalidVideo, match="lasts 2s, not 4s"):
        await put()
    assert await storage.stat("r/0-gen.mp4") is None  # nothing stored, nothing left behind


def _files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


@pytest.mark.parametrize(("video_s", "stored"), [(8.0, True), (1.0, False), (12.0, False)])
async def test_the_fetcher_refuses_a_video_of_the_wrong_length(
    tmp_path: Path, video_s: float, stored: bool
) -> None:
    provider = FakeProvider(video=render_sample_mp4(64, 48, seconds=video_s, fps=4))
    publisher = MemoryPublisher()
    deps = FetcherDeps(
        providers={provider.name: provider},
        storage=LocalFolderStorage(tmp_path),
        publisher=publisher,
        download=DownloadPolicy(attempts=3, wait=wait_none()),
    )
    request = RequestSnapshot(prompt="a fox", seconds=8)
    await handle_job_succeeded(_succeeded(provider.name, "task_1", ["gen_1"], request), deps)
    files = _files(tmp_path)
    if stored:
        assert len(publisher.of_type(VideoStored)) == 1 and len(files) == 2  # video + sidecar
        return
    (unavailable,) = publisher.of_type(DownloadUnavailable)
    assert isinstance(unavailable, DownloadUnavailable)
    assert unavailable.reason_code == "invalid_content"
    assert f"lasts {video_s:g}s, not 8s" in unavailable.message
    assert unavailable.request == request  # the redownloader checks against the same length
    assert provider.downloads == 1  # terminal: not downloaded again in place
    assert files == [] and not publisher.of_type(VideoStored)


async def test_without_a_request_snapshot_any_positive_length_is_stored(tmp_path: Path) -> None:
    provider = FakeProvider(video=render_sample_mp4(64, 48, seconds=1, fps=4))
    publisher = MemoryPublisher()
    deps = FetcherDeps(
        providers={provider.name: provider},
        storage=LocalFolderStorage(tmp_path),
        publisher=publisher,
        download=DownloadPolicy(attempts=1, wait=wait_none()),
    )
    await handle_job_succeeded(_succeeded(provider.name, "task_1", ["gen_1"], None), deps)
    assert len(publisher.of_type(VideoStored)) == 1


def test_the_bytes_probe_reads_the_same_length_as_the_check() -> None:
    # The store check reads the container duration from the first frame's probe; the full
    # decode agrees, so the tests' probe_mp4 and the pipeline's check measure the same thing.
    assert probe_first_frame(io.BytesIO(TWO_SECONDS)) == pytest.approx(
        probe_mp4(TWO_SECONDS)["duration"]
    )
