"""Runway's official SDK (`runwayml`) against the emulator, unchanged: create to bytes.

The SDK is pointed at the emulator by its documented `base_url` argument (`RUNWAYML_BASE_URL`
works as well); it sends `X-Runway-Version` itself. Its own `wait_for_task_output` polls every
~6 s, so the test polls `tasks.retrieve` as a user with a shorter interval would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import runwayml
from runwayml import AsyncRunwayML

from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.media.sample import probe_mp4

KEY = "key_runway-sdk-test-secret-58ab"
_DEADLINE_S = 30.0
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EmulatorServer]:
    monkeypatch.delenv("RUNWAYML_API_SECRET", raising=False)
    monkeypatch.delenv("RUNWAYML_BASE_URL", raising=False)
    config = EmulatorConfig(api_key=KEY, time_scale=50.0, max_concurrent_jobs=None)
    async with EmulatorServer(config) as server:
        yield server


def _client(emulator: EmulatorServer, key: str = KEY) -> AsyncRunwayML:
    return AsyncRunwayML(api_key=key, base_url=emulator.base_url, max_retries=0)


async def _until_terminal(client: AsyncRunwayML, task_id: str) -> tuple[list[str], object]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DEADLINE_S
    seen: list[str] = []
    while True:
        task = await client.tasks.retrieve(task_id)
        if not seen or seen[-1] != task.status:
            seen.append(task.status)
        if task.status in _TERMINAL:
            return seen, task
        assert loop.time() < deadline, f"the task is stuck in {task.status}"
        await asyncio.sleep(0.01)


async def test_the_sdk_creates_polls_and_downloads_a_task(emulator: EmulatorServer) -> None:
    client = _client(emulator)
    created = await client.text_to_video.create(
        model="gen4.5", prompt_text="a fox in snow", ratio="1280:720", duration=5
    )
    seen, task = await _until_terminal(client, created.id)
    assert isinstance(task, runwayml.types.task_retrieve_response.Succeeded), seen
    order = {"THROTTLED": 0, "PENDING": 1, "RUNNING": 2, "SUCCEEDED": 3}
    assert [order[s] for s in seen] == sorted(order[s] for s in seen)
    assert task.cost.credits > 0
    async with httpx.AsyncClient() as http:
        video = await http.get(task.output[0])  # a signed CDN URL: no key
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert probe_mp4(video.content)["duration"] == pytest.approx(5.0, abs=0.5)
    assert emulator.state.stats["runway.jobs_created"] == 1


async def test_the_sdk_sees_failure_cancel_and_a_wrong_key(emulator: EmulatorServer) -> None:
    client = _client(emulator)
    flagged = await client.image_to_video.create(
        model="gen4.5",
        prompt_image="https://example.com/fox.png",
        prompt_text="a forbidden fox",
        ratio="1280:720",
        duration=5,
    )
    _, task = await _until_terminal(client, flagged.id)
    assert isinstance(task, runwayml.types.task_retrieve_response.Failed)
    assert task.failure_code == "SAFETY.INPUT.TEXT"
    slow = await client.text_to_video.create(
        model="gen4.5", prompt_text="a fox [emulator:slow=50]", ratio="1280:720", duration=5
    )
    await client.tasks.delete(slow.id)
    _, cancelled = await _until_terminal(client, slow.id)
    assert isinstance(cancelled, runwayml.types.task_retrieve_response.Cancelled)
    with pytest.raises(runwayml.AuthenticationError) as info:
        await _client(emulator, "wrong-key").text_to_video.create(
            model="gen4.5", prompt_text="a fox", ratio="1280:720", duration=5
        )
    assert info.value.status_code == 401
