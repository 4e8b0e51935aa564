"""The emulator's gemini and runway protocols: their switches, through vidpipe's clients and HTTP.

The contract suite (tests/contracts) covers the common cases (rate limit, moderation at create, a
missing download, a lost create); these are the other switches, and what each protocol answers
its own way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from vidpipe.dev.emulator import EmulatorConfig, EmulatorServer
from vidpipe.errors import DownloadNotAvailable, ProviderUnavailable, RateLimited
from vidpipe.net.retry import RetryPolicy
from vidpipe.providers import (
    GeminiConfig,
    ProviderClient,
    ProviderJob,
    RunwayConfig,
    VideoSpec,
    build_provider,
)

KEY = "gemini-runway-emulator-key-41aa"
OMNI = "gemini-omni-1.1-flash"
_DEADLINE_S = 20.0


async def _no_wait(_seconds: float) -> None:
    return None


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(api_key=KEY, time_scale=100.0, max_concurrent_jobs=None)
    async with EmulatorServer(config) as server:
        yield server


def _client(emulator: EmulatorServer, name: str, model: str | None = None) -> ProviderClient:
    base = emulator.base_url
    config: GeminiConfig | RunwayConfig = RunwayConfig(base_url=base, api_key=KEY)
    if name == "gemini":
        config = GeminiConfig(base_url=base, api_key=KEY)
        if model is not None:
            config = GeminiConfig(base_url=base, api_key=KEY, model=model)
    return build_provider(name, config, timeout_s=10.0, retry=RetryPolicy(sleep=_no_wait))


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DEADLINE_S
    while not await check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


async def _finished(client: ProviderClient, prompt: str) -> ProviderJob:
    spec = VideoSpec(prompt=f"{prompt} {uuid.uuid4().hex}", seconds=4)
    job = await client.create_job(spec, idempotency_key="unused")
    done: list[ProviderJob] = []

    async def terminal() -> bool:
        done.append(await client.get_job(job.job_id))
        return done[-1].terminal

    await _eventually(terminal, f"{job.job_id} never ended")
    return done[-1]


async def _bytes(client: ProviderClient, job: ProviderJob) -> bytes:
    async with client.download(job.job_id, job.generation_ids[0]) as video:
        return b"".join([chunk async for chunk in video.chunks])


@pytest.mark.parametrize("model", [None, OMNI])
async def test_gemini_moderation_status_errors_and_expiry(
    emulator: EmulatorServer, model: str | None
) -> None:
    client = _client(emulator, "gemini", model)
    try:
        flagged = await _finished(client, "a forbidden fox")
        assert (flagged.status, flagged.failure_code) == ("failed", "content_policy_violation")
        # The first two status reads answer 503; the client's retry reads on to the end.
        flaky = await _finished(client, "a fox [emulator:status_errors=2]")
        assert flaky.status == "succeeded"
        expired = await _finished(client, "a fox [emulator:retention=1]")
        # The files live 10 ms (real) after the job ends: wait for the emulator's clock to pass
        # that, so the download below cannot race it.
        served = emulator.state.jobs[expired.job_id.rsplit("/", 1)[-1]]

        async def gone() -> bool:
            return emulator.state.clock() >= served.assets_expire

        await _eventually(gone, "the files never expired")
        # Gone: the files route answers 410 (an interaction then names that route, not the
        # video inline).
        with pytest.raises(DownloadNotAvailable):
            await _bytes(client, expired)
    finally:
        await client.aclose()


async def test_gemini_delayed_download_arrives_and_omni_falls_back_to_a_uri(
    emulator: EmulatorServer,
) -> None:
    veo = _client(emulator, "gemini")
    omni = _client(emulator, "gemini", OMNI)
    try:
        job = await _finished(
            veo, "a fox [emulator:download=delayed] [emulator:download_delay=200]"
        )
        with pytest.raises(DownloadNotAvailable):
            await _bytes(veo, job)

        async def arrived() -> bool:
            try:
                return len(await _bytes(veo, job)) > 0
            except DownloadNotAvailable:
                return False

        await _eventually(arrived, "the delayed video never arrived")
        emulator.update_config(interactions_inline_max_bytes=0)
        before = emulator.state.stats["gemini.content_requests"]
        clip = await _finished(omni, "a fox")
        assert len(await _bytes(omni, clip)) > 0
        # Fetched from the files route (one content request), not decoded from the interaction.
        assert emulator.state.stats["gemini.content_requests"] == before + 1
    finally:
        await veo.aclose()
        await omni.aclose()


async def test_gemini_cancel_faults_and_routes_of_its_own(emulator: EmulatorServer) -> None:
    omni = _client(emulator, "gemini", OMNI)
    veo = _client(emulator, "gemini")
    try:
        slow = await omni.create_job(
            VideoSpec(prompt="a fox [emulator:slow=500]"), idempotency_key="k"
        )
        assert await omni.cancel_job(slow.job_id) is True
        assert (await omni.get_job(slow.job_id)).status == "cancelled"
        assert await omni.cancel_job(slow.job_id) is True  # again: still cancelled
        ended = await _finished(omni, "a fox")
        assert await omni.cancel_job(ended.job_id) is False  # completed: nothing to stop
        emulator.update_config(fault_rate_limit_share=1.0)
        no_retry = build_provider(
            "gemini",
            GeminiConfig(base_url=emulator.base_url, api_key=KEY),
            retry=RetryPolicy(attempts=1),
        )
        try:
            with pytest.raises(RateLimited) as info:
                await no_retry.create_job(VideoSpec(prompt="a fox"), idempotency_key="k")
        finally:
            await no_retry.aclose()
        assert info.value.retry_after is not None and info.value.retry_after > 0
        emulator.update_config(fault_rate_limit_share=0.0)
        async with httpx.AsyncClient(base_url=emulator.base_url) as http:
            # Another Gemini method is the API's 404, not fal's catch-all submit.
            other = await http.post(
                "/v1beta/models/veo-3.0-generate-001:generateContent",
                headers={"x-goog-api-key": KEY},
                json={},
            )
            missing = await http.post("/v1beta/interactions", json={"model": OMNI})
        assert other.status_code == 404
        assert missing.status_code == 403 and missing.json()["error"]["status"] == (
            "PERMISSION_DENIED"
        )
        assert emulator.state.stats["fal.jobs_created"] == 0
    finally:
        await omni.aclose()
        await veo.aclose()


async def test_runway_version_flaky_download_cancel_and_concurrency(
    emulator: EmulatorServer,
) -> None:
    client = _client(emulator, "runway")
    try:
        async with httpx.AsyncClient(base_url=emulator.base_url) as http:
            unversioned = await http.post(
                "/v1/text_to_video",
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 5},
            )
        assert unversioned.status_code == 400 and "X-Runway-Version" in unversioned.json()["error"]
        flagged = await _finished(client, "a forbidden fox")
        assert (flagged.status, flagged.failure_code) == ("failed", "content_policy_violation")
        flaky = await _finished(client, "a fox [emulator:download=flaky]")
        with pytest.raises(ProviderUnavailable):
            await _bytes(client, flaky)
        assert len(await _bytes(client, flaky)) > 0  # every other request succeeds
        assert await client.cancel_job(flaky.job_id) is False  # ended: left alone, not deleted
        assert (await client.get_job(flaky.job_id)).status == "succeeded"
        slow = await client.create_job(
            VideoSpec(prompt="a fox [emulator:slow=500]"), idempotency_key="k"
        )
        first = await client.get_job(slow.job_id)
        assert first.status == "queued" and first.raw_status in ("THROTTLED", "PENDING")
        emulator.update_config(max_concurrent_jobs=1)
        with pytest.raises(RateLimited) as info:
            await client.create_job(VideoSpec(prompt="one too many"), idempotency_key="k")
        assert info.value.retry_after is not None
        assert await client.cancel_job(slow.job_id) is True
        assert (await client.get_job(slow.job_id)).status == "cancelled"
    finally:
        await client.aclose()


async def test_a_scoped_directive_acts_on_its_own_protocol_only(emulator: EmulatorServer) -> None:
    gemini = _client(emulator, "gemini")
    runway = _client(emulator, "runway")
    try:
        prompt = "a fox [emulator:runway.fail=internal_error]"
        assert (await _finished(gemini, prompt)).status == "succeeded"
        failed = await _finished(runway, prompt)
        assert (failed.status, failed.failure_code) == ("failed", "INTERNAL")
    finally:
        await gemini.aclose()
        await runway.aclose()
