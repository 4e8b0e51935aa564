"""Google's official SDK (`google-genai`) against the emulator, unchanged: create to bytes.

The SDK is pointed at the emulator by its documented `http_options=HttpOptions(base_url=...)`.
The emulator serves TLS here (a throwaway CA from trustme, trusted through `SSL_CERT_FILE`, which
the SDK reads when it builds its HTTP client): `files.download` takes a video's file id out of an
`https://` URI only, as the real API's URIs are.

google-genai is pinned at 2.34, the newest whose `models.generate_videos` still speaks the Gemini
API (from 3.0 it is Vertex-only); its `interactions` (Gemini Omni) are driven as well.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
from google import genai
from google.genai import errors, types
from google.genai.interactions import Interaction

from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.media.sample import probe_mp4

KEY = "gemini-sdk-test-key-7d2f"
VEO = "veo-3.0-generate-001"
OMNI = "gemini-omni-1.1-flash"
_DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    folder = tmp_path_factory.mktemp("gemini-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    yield ca_file, cert_file, key_file


@pytest.fixture
async def emulator(
    tls_files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[EmulatorServer]:
    ca_file, cert_file, key_file = tls_files
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)
    config = EmulatorConfig(api_key=KEY, time_scale=50.0, max_concurrent_jobs=None)
    async with EmulatorServer(
        config, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)
    ) as server:
        yield server


def _client(emulator: EmulatorServer, key: str = KEY) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=emulator.base_url))


async def _until_done(
    client: genai.Client, operation: types.GenerateVideosOperation
) -> types.GenerateVideosOperation:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DEADLINE_S
    while not operation.done:
        assert loop.time() < deadline, "the operation never finished"
        await asyncio.sleep(0.05)
        operation = await client.aio.operations.get(operation)
    return operation


async def test_generate_videos_polls_the_operation_and_downloads_the_video(
    emulator: EmulatorServer,
) -> None:
    client = _client(emulator)
    operation = await client.aio.models.generate_videos(
        model=VEO,
        source=types.GenerateVideosSource(prompt="a fox in snow"),
        config=types.GenerateVideosConfig(
            number_of_videos=2, duration_seconds=5, aspect_ratio="16:9"
        ),
    )
    assert operation.name is not None and operation.name.startswith(f"models/{VEO}/operations/")
    assert not operation.done
    operation = await _until_done(client, operation)
    assert operation.error is None and operation.response is not None
    videos = operation.response.generated_videos or []
    assert len(videos) == 2
    video = videos[0].video
    assert video is not None and video.uri is not None and video.uri.startswith("https://")
    data = await client.aio.files.download(file=video)
    assert probe_mp4(data)["duration"] == pytest.approx(5.0, abs=0.5)
    stats = emulator.state.stats
    assert stats["gemini.jobs_created"] == 1 and stats["gemini.content_requests"] == 1


async def test_the_sdk_sees_a_filtered_video_a_failure_and_a_wrong_key(
    emulator: EmulatorServer,
) -> None:
    client = _client(emulator)
    filtered = await _until_done(
        client,
        await client.aio.models.generate_videos(
            model=VEO, source=types.GenerateVideosSource(prompt="a forbidden fox")
        ),
    )
    assert filtered.response is not None and not filtered.response.generated_videos
    assert filtered.response.rai_media_filtered_count == 1
    assert "usage guidelines" in " ".join(filtered.response.rai_media_filtered_reasons or [])
    failed = await _until_done(
        client,
        await client.aio.models.generate_videos(
            model=VEO, source=types.GenerateVideosSource(prompt="a fox [emulator:fail=x_y]")
        ),
    )
    assert failed.error is not None and failed.error["code"] == 13
    with pytest.raises(errors.ClientError) as info:
        await _client(emulator, "wrong-key").aio.models.generate_videos(
            model=VEO, source=types.GenerateVideosSource(prompt="a fox")
        )
    assert info.value.code == 400 and "API key not valid" in str(info.value)
    assert "wrong-key" not in str(emulator.state.stats)


async def test_an_interaction_in_the_background_ends_with_the_video_inline(
    emulator: EmulatorServer,
) -> None:
    client = _client(emulator)
    interaction = await client.aio.interactions.create(
        model=OMNI, input="a fox in snow", response_modalities=["video"], background=True
    )
    assert isinstance(interaction, Interaction)  # not a stream: `stream` was not asked for
    assert interaction.status == "in_progress" and interaction.id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DEADLINE_S
    while interaction.status == "in_progress":
        assert loop.time() < deadline, "the interaction never finished"
        await asyncio.sleep(0.05)
        polled = await client.aio.interactions.get(interaction.id)
        assert isinstance(polled, Interaction)
        interaction = polled
    assert interaction.status == "completed"
    video = interaction.output_video
    assert video is not None and video.data is not None and video.mime_type == "video/mp4"
    data = video.data if isinstance(video.data, bytes) else base64.b64decode(video.data)
    assert probe_mp4(data)["duration"] == pytest.approx(10.0, abs=0.5)
