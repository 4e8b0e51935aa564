"""The emulator's Replicate predictions API: its switches, seen through vidpipe's client.

The contract suite covers the common cases; these are what Replicate adds or answers its own
way: outputs deleted an hour after completion, status errors, cancel, a flagged prediction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.errors import CreateOutcomeUnknown, DownloadNotAvailable
from vidpipe.net.retry import RetryPolicy
from vidpipe.providers import (
    ProviderJob,
    ReplicateClient,
    ReplicateConfig,
    VideoSpec,
    build_provider,
)

KEY = "r8_emulator-test-token-1a2b"
_DEADLINE_S = 20.0


async def _no_wait(_seconds: float) -> None:
    return None


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    # 1200x: Replicate's hour of output retention is three real seconds.
    config = EmulatorConfig(api_key=KEY, time_scale=1200.0, max_concurrent_jobs=None)
    async with EmulatorServer(config) as server:
        yield server


@pytest.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[ReplicateClient]:
    built = build_provider(
        "replicate",
        ReplicateConfig(base_url=emulator.base_url, api_token=KEY),
        timeout_s=10.0,
        retry=RetryPolicy(sleep=_no_wait),
    )
    assert isinstance(built, ReplicateClient)
    try:
        yield built
    finally:
        await built.aclose()


async def _finished(client: ReplicateClient, prompt: str) -> ProviderJob:
    spec = VideoSpec(prompt=f"{prompt} {uuid.uuid4().hex}", seconds=5)
    created = await client.create_job(spec, idempotency_key="unused")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DEADLINE_S
    while True:
        job = await client.get_job(created.job_id)
        if job.terminal:
            return job
        assert loop.time() < deadline, job.raw_status
        await asyncio.sleep(0.005)


async def test_outputs_are_deleted_an_hour_after_completion(
    client: ReplicateClient, emulator: EmulatorServer
) -> None:
    job = await _finished(client, "a fox [emulator:status_errors=2]")
    assert job.status == "succeeded" and job.expires_at is not None
    async with client.download(job.job_id, job.generation_ids[0]) as video:
        assert (await anext(video.chunks))[4:8] == b"ftyp"
    await asyncio.sleep(3.2)  # past the hour (3600 emulated seconds)
    with pytest.raises(DownloadNotAvailable, match="deleted an hour after completion"):
        async with client.download(job.job_id, job.generation_ids[0]):
            pytest.fail("a deleted output must not be served")
    async with httpx.AsyncClient(base_url=emulator.base_url) as http:
        answer = await http.get(
            f"/v1/predictions/{job.job_id}", headers={"Authorization": f"Bearer {KEY}"}
        )
    assert answer.json()["data_removed"] is True and answer.json()["output"] is None
    later = await client.get_job(job.job_id)
    assert later.status == "failed" and later.failure_code == "no_output"


async def test_a_flagged_prediction_fails_as_content_policy(client: ReplicateClient) -> None:
    job = await _finished(client, "a forbidden fox")
    assert job.status == "failed" and job.failure_code == "content_policy_violation"


async def test_cancel_ends_a_prediction_as_cancelled(client: ReplicateClient) -> None:
    created = await client.create_job(
        VideoSpec(prompt="a fox [emulator:slow=1000]"), idempotency_key="unused"
    )
    assert await client.cancel_job(created.job_id) is True
    job = await client.get_job(created.job_id)
    assert job.status == "cancelled" and job.raw_status == "canceled"
    # Idempotent: the prediction is answered as it ended, cancelled.
    assert await client.cancel_job(created.job_id) is True


async def test_a_5xx_on_create_is_outcome_unknown_not_resent(
    client: ReplicateClient, emulator: EmulatorServer
) -> None:
    # No Idempotency-Key: a 5xx create may have made the prediction, so it is not re-sent (the
    # SDK never re-sends a POST either); the submitter reconciles from the list.
    emulator.update_config(fault_server_error_share=1.0)
    try:
        with pytest.raises(CreateOutcomeUnknown):
            await client.create_job(VideoSpec(prompt="a fox"), idempotency_key="unused")
    finally:
        emulator.update_config(fault_server_error_share=0.0)
    assert emulator.state.stats["faults.server_errors"] == 1
