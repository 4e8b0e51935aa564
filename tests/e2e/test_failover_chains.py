"""Requests mapped onto what providers accept, and failover chains, through the real pipeline.

Every stage is its own process on a real Kafka broker and database; the emulator's per-protocol
directives (`[emulator:azure.download=missing]`) make a provider unable to deliver.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tests.e2e.conftest import EMULATOR_KEY, MakePipeline
from tests.e2e.harness import Pipeline, make_request
from vidpipe.db.tables import events
from vidpipe.dev.emulator.server import EmulatorThread

CORE = ("submitter", "poller", "fetcher", "recorder")


def _more_providers(emulator: EmulatorThread) -> dict[str, str]:
    return {
        "VIDPIPE_FAL_BASE_URL": emulator.base_url,
        "VIDPIPE_FAL_API_KEY": EMULATOR_KEY,
        "VIDPIPE_GEMINI_BASE_URL": emulator.base_url,
        "VIDPIPE_GEMINI_API_KEY": EMULATOR_KEY,
        "VIDPIPE_DOWNLOAD_ATTEMPTS": "1",
    }


async def _payloads(pipeline: Pipeline, request_id: str, event_type: str) -> list[dict[str, Any]]:
    async with pipeline.records.engine.connect() as conn:
        rows = await conn.execute(
            select(events.c.payload).where(
                events.c.request_id == request_id, events.c.event_type == event_type
            )
        )
        return [dict(row[0]) for row in rows]


def _jobs_for(emulator: EmulatorThread, prompt: str) -> list[Any]:
    return [job for job in list(emulator.state.jobs.values()) if job.prompt == prompt]


async def test_a_chain_azure_gemini_fal_ends_stored_from_fal(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline(
        {**_more_providers(emulator), "VIDPIPE_FAILOVER_WHEN": "immediate"}
    )
    for name in (*CORE, "failover"):
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    # Neither Azure nor Gemini hands its video over; fal does.
    prompt = f"a stag {prefix} [emulator:azure.download=missing] [emulator:gemini.download=missing]"
    request = make_request(
        prefix,
        "chain",
        prompt=prompt,
        provider="azure-sora",
        seconds=4,
        fallbacks=["failover"],
        failover_chain=["gemini", "fal"],
    )
    await pipeline.publish(request)
    rid = request.request_id
    first, last = f"{rid}.failover", f"{rid}.failover2"
    views = await pipeline.wait_for(
        [rid, last], until=lambda v: v.status == "stored", timeout_s=150
    )
    children = await pipeline.records.many([first, last])
    assert (children[first].provider, children[last].provider) == ("gemini", "fal")
    assert children[first].parent_request_id == children[last].parent_request_id == rid
    assert children[first].status != "stored"  # gemini never delivered
    assert views[rid].failover_path == "azure-sora,gemini,fal"
    assert views[last].failover_path == "azure-sora,gemini,fal"
    assert views[rid].failover_request_id == last
    assert views[rid].output_image_url == views[last].output_image_url
    assert views[rid].placeholder is False
    # One job per provider, and fal was sent the 5 s it takes for the 4 s asked.
    jobs = _jobs_for(emulator, prompt)
    assert sorted(job.protocol for job in jobs) == ["azure", "fal", "gemini"]
    (submitted,) = await _payloads(pipeline, last, "JobSubmitted")
    assert submitted["request"]["sent"]["seconds"] == 5
    assert submitted["request"]["failover_path"] == ["azure-sora", "gemini"]


async def test_an_unsupported_request_fails_before_any_create(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline()
    for name in CORE:
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    prompt = f"a long tale {prefix}"
    request = make_request(
        prefix, "unsupported", prompt=prompt, provider="openai-videos", seconds=30
    )
    await pipeline.publish(request)
    rid = request.request_id
    views = await pipeline.wait_for([rid], until=lambda v: v.status == "failed")
    assert views[rid].error_message == (
        "unsupported_request: openai-videos (sora-2) takes seconds 4, 8, 12; 30 s was asked"
    )
    (failed,) = await _payloads(pipeline, rid, "JobFailed")
    assert (failed["stage"], failed["reason_code"]) == ("submit", "unsupported_request")
    assert await pipeline.count_events(rid, "JobSubmitted") == 0
    assert _jobs_for(emulator, prompt) == []


async def test_five_seconds_on_openai_videos_is_mapped_and_stored(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline()
    for name in CORE:
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    prompt = f"a fox in snow {prefix}"
    request = make_request(prefix, "five", prompt=prompt, provider="openai-videos", seconds=5)
    await pipeline.publish(request)
    rid = request.request_id
    views = await pipeline.wait_for([rid], until=lambda v: v.status in ("stored", "failed"))
    assert views[rid].status == "stored", views[rid].error_message
    (job,) = _jobs_for(emulator, prompt)
    assert (job.protocol, job.seconds) == ("openai", 4)
    (submitted,) = await _payloads(pipeline, rid, "JobSubmitted")
    assert submitted["request"]["seconds"] == 5
    assert submitted["request"]["sent"]["seconds"] == 4
    assert submitted["request"]["sent"]["changes"] == ["seconds 5 -> 4"]


async def test_a_providers_own_failure_fails_over_and_the_record_shows_it(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline(
        {"VIDPIPE_FAILOVER_CHAIN": "openai-videos", "VIDPIPE_DOWNLOAD_ATTEMPTS": "1"}
    )
    for name in (*CORE, "failover"):
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    # Azure's job fails on Azure's side (internal_error): another provider may well succeed.
    prompt = f"a heron {prefix} [emulator:azure.fail=internal_error]"
    request = make_request(
        prefix, "outage", prompt=prompt, provider="azure-sora", seconds=5, fallbacks=["failover"]
    )
    await pipeline.publish(request)
    rid = request.request_id
    child = f"{rid}.failover"
    views = await pipeline.wait_for(
        [rid, child], until=lambda v: v.status == "stored", timeout_s=120
    )
    (failed,) = await _payloads(pipeline, rid, "JobFailed")
    assert (failed["stage"], failed["reason_code"]) == ("poll", "internal_error")
    assert views[child].provider == "openai-videos"
    assert views[rid].failover_path == "azure-sora,openai-videos"
    assert views[rid].output_image_url == views[child].output_image_url
    (job,) = [j for j in _jobs_for(emulator, prompt) if j.protocol == "openai"]
    assert job.seconds == 4  # mapped for /v1/videos
