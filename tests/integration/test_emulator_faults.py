"""Provider-wide faults of the emulator over real loopback HTTP, as the fault suite uses them.

Each share is set to 1 (every request draws it) so the outcome is certain; the official openai
client is used where its own error types are what a user would see.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.dev.emulator.faults import is_api_path, is_create

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KEY = "fault-key-0123456789"
BASE = EmulatorConfig(api_key=KEY, time_scale=100.0, seed=7)
AZURE_JOBS = "/openai/v1/video/generations/jobs"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(BASE) as srv:
        yield srv


@pytest.fixture
async def emu(server: EmulatorServer) -> EmulatorServer:
    server.state.set_config(BASE)
    server.state.reset()
    return server


@pytest.fixture
async def az(emu: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=emu.azure_endpoint, params={"api-version": "preview"}, headers={"api-key": KEY}
    ) as client:
        yield client


def _azure_job(prompt: str) -> dict[str, object]:
    return {"model": "sora", "prompt": prompt, "width": 480, "height": 480, "n_seconds": 5}


def test_only_api_paths_and_creates_are_targets() -> None:
    assert is_api_path("/openai/v1/video/generations/jobs") and is_api_path("/v1/videos")
    assert not is_api_path("/_emulator/config")
    assert is_create("POST", AZURE_JOBS) and is_create("POST", "/v1/videos")
    assert is_create("POST", "/v1/videos/video_1/remix")
    assert not is_create("GET", AZURE_JOBS) and not is_create("POST", "/v1/videos/x/content")


async def test_a_rate_limit_burst_answers_429_with_retry_after_and_creates_nothing(
    emu: EmulatorServer, az: httpx.AsyncClient
) -> None:
    emu.update_config(fault_rate_limit_share=1.0, retry_after_seconds=200.0)
    response = await az.post(AZURE_JOBS, json=_azure_job("a fox"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"  # 200 emulated s at time_scale 100
    assert response.headers["apim-request-id"]
    assert emu.state.jobs == {}
    client = openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key=KEY, max_retries=0)
    try:
        with pytest.raises(openai.RateLimitError):
            await client.videos.create(model="sora-2", prompt="a fox", seconds="4")
    finally:
        await client.close()
    assert emu.state.stats["faults.rate_limited"] == 2
    # The admin routes are never faulted: a test can always turn the burst off.
    health = await az.get("/_emulator/health")
    assert health.status_code == 200


async def test_a_server_error_burst_answers_5xx_on_status_checks(
    emu: EmulatorServer, az: httpx.AsyncClient
) -> None:
    created = await az.post(AZURE_JOBS, json=_azure_job("a fox"))
    assert created.status_code == 200
    emu.update_config(fault_server_error_share=1.0, status_error_code=502)
    status = await az.get(f"{AZURE_JOBS}/{created.json()['id']}")
    assert status.status_code == 502
    assert status.json()["error"]["code"] == "502"
    emu.update_config(fault_server_error_share=0.0)
    assert (await az.get(f"{AZURE_JOBS}/{created.json()['id']}")).status_code == 200
    assert emu.state.stats["faults.server_errors"] == 1


async def test_a_dropped_create_makes_the_job_and_forgets_its_idempotency_key(
    emu: EmulatorServer, az: httpx.AsyncClient
) -> None:
    emu.update_config(fault_drop_after_create_share=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        await az.post(AZURE_JOBS, json=_azure_job("a fox"), headers={"idempotency-key": "k1"})
    assert len(emu.state.jobs) == 1
    assert not emu.state.idempotency  # a resend with "k1" would be a second paid job
    emu.update_config(fault_drop_after_create_share=0.0)
    again = await az.post(AZURE_JOBS, json=_azure_job("a fox"), headers={"idempotency-key": "k1"})
    assert again.status_code == 200
    assert len(emu.state.jobs) == 2
    assert emu.state.stats["faults.creates_dropped"] == 1


async def test_a_refused_create_is_passed_through_not_dropped(
    emu: EmulatorServer, az: httpx.AsyncClient
) -> None:
    emu.update_config(fault_drop_after_create_share=1.0, moderation_mode="reject")
    response = await az.post(AZURE_JOBS, json=_azure_job("something forbidden"))
    assert response.status_code == 400
    assert emu.state.stats["faults.creates_dropped"] == 0


async def test_a_slow_answer_is_held_past_the_clients_timeout(
    emu: EmulatorServer, az: httpx.AsyncClient
) -> None:
    emu.update_config(fault_slow_share=1.0, fault_slow_seconds=0.5)
    with pytest.raises(httpx.ReadTimeout):
        await az.post(AZURE_JOBS, json=_azure_job("a fox"), timeout=0.1)
    # The API handled it before the answer was held: the job exists though the client gave up.
    assert len(emu.state.jobs) == 1
    began = time.monotonic()
    listed = await az.get(AZURE_JOBS, timeout=5.0)
    assert listed.status_code == 200
    assert time.monotonic() - began >= 0.5
    assert emu.state.stats["faults.slowed"] == 2


def test_shares_that_cannot_both_be_drawn_are_refused() -> None:
    with pytest.raises(ValueError, match="must be <= 1"):
        BASE.updated({"fault_rate_limit_share": 0.7, "fault_server_error_share": 0.5})
