"""The emulator's fal queue: its switches, seen through vidpipe's fal client and plain HTTP.

The contract suite (tests/contracts) covers the common cases (rate limit, moderation, a missing
download, a lost create); these are the switches fal's side adds or answers its own way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.errors import (
    CreateOutcomeUnknown,
    DownloadNotAvailable,
    InvalidVideo,
    ProviderUnavailable,
    RateLimited,
)
from vidpipe.net.retry import RetryPolicy
from vidpipe.providers import FalClient, FalConfig, ProviderJob, VideoSpec, build_provider

KEY = "fal-emulator-test-key-77d0"
_DEADLINE_S = 20.0


async def _no_wait(_seconds: float) -> None:
    return None


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(api_key=KEY, time_scale=100.0, max_concurrent_jobs=None)
    async with EmulatorServer(config) as server:
        yield server


@pytest.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[FalClient]:
    built = build_provider(
        "fal",
        FalConfig(base_url=emulator.base_url, api_key=KEY),
        timeout_s=10.0,
        retry=RetryPolicy(sleep=_no_wait),
    )
    assert isinstance(built, FalClient)
    try:
        yield built
    finally:
        await built.aclose()


async def _finished(client: FalClient, prompt: str) -> ProviderJob:
    spec = VideoSpec(prompt=f"{prompt} {uuid.uuid4().hex}", seconds=5)
    created = await client.create_job(spec, idempotency_key="unused")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DEADLINE_S
    while True:
        job = await client.get_job(created.job_id)
        if job.terminal:
            return job
        assert loop.time() < deadline, job.raw_status
        await asyncio.sleep(0.02)


async def test_a_failed_generation_is_a_failed_job_with_fal_error_type(client: FalClient) -> None:
    job = await _finished(client, "a fox [emulator:fal.fail=internal_error]")
    assert (job.status, job.raw_status, job.failure_code) == (
        "failed",
        "COMPLETED",
        "internal_error",
    )


async def test_moderation_after_acceptance_fails_the_job_as_content_policy(
    client: FalClient,
) -> None:
    job = await _finished(client, "a forbidden fox")
    assert job.status == "failed" and job.failure_code == "content_policy_violation"


async def test_a_delayed_download_is_unavailable_then_streams(
    client: FalClient, emulator: EmulatorServer
) -> None:
    job = await _finished(client, "a fox [emulator:download=delayed] [emulator:download_delay=300]")
    assert job.status == "succeeded"
    with pytest.raises(DownloadNotAvailable):
        async with client.download(job.job_id, job.generation_ids[0]):
            pytest.fail("the file must not be there yet")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DEADLINE_S
    while True:  # 300 emulated seconds are 3 s here
        try:
            async with client.download(job.job_id, job.generation_ids[0]) as video:
                body = b"".join([chunk async for chunk in video.chunks])
            break
        except DownloadNotAvailable:
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
    assert body[4:8] == b"ftyp"
    assert emulator.state.stats["fal.content_requests"] >= 2


async def test_a_json_body_and_a_metadata_redirect_are_refused(
    client: FalClient, emulator: EmulatorServer
) -> None:
    job = await _finished(client, "a fox [emulator:download=json_body]")
    with pytest.raises(InvalidVideo):
        async with client.download(job.job_id, job.generation_ids[0]):
            pytest.fail("a JSON body is not a video")
    job = await _finished(client, "a fox [emulator:download=redirect]")
    with pytest.raises(DownloadNotAvailable, match="redirect refused"):
        async with client.download(job.job_id, job.generation_ids[0]):
            pytest.fail("the metadata address must not be reached")


async def test_an_expired_file_is_unavailable(client: FalClient) -> None:
    job = await _finished(client, "a fox [emulator:retention=1]")
    await asyncio.sleep(0.05)  # 1 emulated second is 10 ms here
    with pytest.raises(DownloadNotAvailable):
        async with client.download(job.job_id, job.generation_ids[0]):
            pytest.fail("an expired file must not be served")


async def test_status_errors_are_retried_and_provider_wide_429s_carry_retry_after(
    client: FalClient, emulator: EmulatorServer
) -> None:
    job = await _finished(client, "a fox [emulator:status_errors=2]")
    assert job.status == "succeeded"
    emulator.update_config(fault_rate_limit_share=1.0)
    with pytest.raises(RateLimited) as info:
        await client.create_job(VideoSpec(prompt="a fox"), idempotency_key="unused")
    emulator.update_config(fault_rate_limit_share=0.0)
    assert info.value.retry_after is not None and info.value.retry_after > 0
    assert emulator.state.stats["faults.rate_limited"] >= 1


async def test_cancel_ends_a_queued_request_and_refuses_a_finished_one(
    client: FalClient, emulator: EmulatorServer
) -> None:
    created = await client.create_job(
        VideoSpec(prompt="a fox [emulator:slow=50]"), idempotency_key="x"
    )
    assert await client.cancel_job(created.job_id) is True
    job = await client.get_job(created.job_id)
    assert job.status == "failed" and job.failure_code == "request_cancelled"
    done = await _finished(client, "a quick fox")
    assert await client.cancel_job(done.job_id) is False
    app, _, request_id = done.job_id.rpartition("/")
    async with httpx.AsyncClient(base_url=emulator.base_url) as http:
        answer = await http.put(
            f"/{app}/requests/{request_id}/cancel", headers={"Authorization": f"Key {KEY}"}
        )
        unauthenticated = await http.get(f"/{app}/requests/{request_id}/status")
    assert answer.status_code == 400 and answer.json() == {"status": "ALREADY_COMPLETED"}
    assert unauthenticated.status_code == 401 and "detail" in unauthenticated.json()


async def test_an_ingress_5xx_on_submit_is_retried_and_stays_retryable(
    client: FalClient, emulator: EmulatorServer
) -> None:
    # The fault middleware answers before fal's app, without an x-fal-request-id: as fal-client
    # does, vidpipe takes that for an ingress error and re-sends (4 attempts), never a lost job.
    emulator.update_config(fault_server_error_share=1.0)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await client.create_job(VideoSpec(prompt="a fox"), idempotency_key="unused")
    finally:
        emulator.update_config(fault_server_error_share=0.0)
    assert not isinstance(info.value, CreateOutcomeUnknown) and info.value.retryable
    assert emulator.state.stats["faults.server_errors"] == 4
    assert emulator.state.stats["fal.jobs_created"] == 0
