"""Replicate's official SDK (`replicate`) against the emulator, unchanged: create to bytes.

The SDK is pointed at the emulator by its documented `base_url` argument (`REPLICATE_BASE_URL`
works as well); its polling interval is its public `poll_interval` attribute.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from replicate.client import Client as ReplicateClient
from replicate.exceptions import ReplicateError

from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.media.sample import probe_mp4

KEY = "r8_replicate-sdk-test-token-31c9"
MODEL = "kwaivgi/kling-v2.1"


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(api_key=KEY, time_scale=50.0, max_concurrent_jobs=None)
    async with EmulatorServer(config) as server:
        yield server


def _client(emulator: EmulatorServer, token: str = KEY) -> ReplicateClient:
    client = ReplicateClient(api_token=token, base_url=emulator.base_url)
    client.poll_interval = 0.02
    return client


async def test_the_sdk_creates_waits_and_downloads_a_prediction(emulator: EmulatorServer) -> None:
    client = _client(emulator)
    prediction = await client.models.predictions.async_create(
        model=MODEL, input={"prompt": "a fox in snow", "duration": 5, "aspect_ratio": "16:9"}
    )
    assert (prediction.status, prediction.model) == ("starting", MODEL)
    await prediction.async_wait()
    assert prediction.status == "succeeded" and prediction.error is None
    assert isinstance(prediction.output, str) and prediction.completed_at is not None
    async with httpx.AsyncClient() as http:
        video = await http.get(prediction.output)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert probe_mp4(video.content)["duration"] == pytest.approx(5.0, abs=0.5)
    # The list shows it, with its input; get by id agrees.
    page = await client.predictions.async_list()
    assert prediction.id in [p.id for p in page.results]
    again = await client.predictions.async_get(prediction.id)
    assert again.input == {"prompt": "a fox in snow", "duration": 5, "aspect_ratio": "16:9"}
    assert emulator.state.stats["replicate.jobs_created"] == 1


async def test_the_sdk_sees_failure_cancel_and_a_wrong_token(emulator: EmulatorServer) -> None:
    client = _client(emulator)
    flagged = await client.models.predictions.async_create(
        model=MODEL, input={"prompt": "a forbidden fox"}
    )
    await flagged.async_wait()
    assert flagged.status == "failed" and "E005" in (flagged.error or "")
    slow = await client.models.predictions.async_create(
        model=MODEL, input={"prompt": "a fox [emulator:slow=50]"}
    )
    canceled = await client.predictions.async_cancel(slow.id)
    assert canceled.status == "canceled"
    with pytest.raises(ReplicateError) as info:
        await _client(emulator, "wrong-token").models.predictions.async_create(
            model=MODEL, input={"prompt": "a fox"}
        )
    assert info.value.status == 401 and info.value.title == "Unauthenticated"
