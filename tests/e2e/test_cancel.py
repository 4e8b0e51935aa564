"""Cancel end to end: every stage its own process, the emulator speaking all four protocols.

A job in flight is cancelled at the provider on each protocol (one through `vidpipe cancel`), a
request cancelled before it arrives is never submitted, a cancel after the video is stored
changes nothing, and cancels racing the providers' completion leave each request either
cancelled or stored, never both, with every quota slot freed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from schemas.events import CancelRequested
from tests.e2e.conftest import EMULATOR_KEY, MakePipeline
from tests.e2e.gateway_harness import start_gateway
from tests.e2e.harness import Pipeline, make_request
from vidpipe.bus.upstream import RequestPublisher
from vidpipe.db.ledger import Ledger
from vidpipe.dev.emulator.server import EmulatorThread

PROTOCOLS = ("azure-sora", "openai-videos", "fal", "replicate")
# What each emulated provider counts when it is asked to stop a job.
CANCEL_STAT = {
    "azure-sora": "azure.deletes",
    "openai-videos": "openai.deletes",
    "fal": "fal.cancel_requests",
    "replicate": "replicate.cancel_requests",
}
STAGES = ("submitter", "poller", "fetcher", "recorder")


def _provider_env(emulator: EmulatorThread, quota: int) -> dict[str, str]:
    return {
        "VIDPIPE_FAL_BASE_URL": emulator.base_url,
        "VIDPIPE_FAL_API_KEY": EMULATOR_KEY,
        "VIDPIPE_REPLICATE_BASE_URL": emulator.base_url,
        "VIDPIPE_REPLICATE_API_TOKEN": EMULATOR_KEY,
        "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": str(quota),
        "VIDPIPE_OPENAI_MAX_CONCURRENT_JOBS": str(quota),
        "VIDPIPE_FAL_MAX_CONCURRENT_JOBS": str(quota),
        "VIDPIPE_REPLICATE_MAX_CONCURRENT_JOBS": str(quota),
    }


async def _cancel(pipeline: Pipeline, *request_ids: str) -> None:
    async with RequestPublisher(
        pipeline.bootstrap_servers, topic_prefix=pipeline.settings.topic_prefix
    ) as publisher:
        for rid in request_ids:
            await publisher.publish_cancel(
                CancelRequested.model_validate({"request_id": rid, "source": "test"})
            )


def _cli(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidpipe", *args],
        env={**os.environ, **pipeline.env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _slots_in_use(pipeline: Pipeline) -> dict[str, int]:
    ledger = Ledger(pipeline.records.engine)
    return {name: await ledger.in_use(name) for name in PROTOCOLS}


async def test_cancel_on_every_protocol_before_and_after(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline(_provider_env(emulator, 2))
    for name in STAGES:
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    asked_before = {p: emulator.state.stats[CANCEL_STAT[p]] for p in PROTOCOLS}

    # In flight on each protocol: slow jobs, cancelled once the provider has them.
    slow = [
        make_request(prefix, p, prompt=f"cancel {p} [emulator:slow]", provider=p, seconds=4)
        for p in PROTOCOLS
    ]
    # Cancelled before it is even published: never submitted.
    early = make_request(prefix, "early", provider="azure-sora")
    # Stored first, cancelled after: nothing changes.
    done = make_request(prefix, "done", provider="openai-videos", seconds=4)
    await _cancel(pipeline, early.request_id)
    # The cancel's own group must have taken it before the request comes (the groups of one
    # stage start independently): then the request finds the tombstone.
    await pipeline.wait_for_events(early.request_id, "JobCancelled", 1)
    await pipeline.publish(*slow, early, done)
    ids = [r.request_id for r in slow]
    await pipeline.wait_for(ids, until=lambda v: v.sora_job_id is not None, timeout_s=60)

    # One through the CLI, the others as an upstream system would.
    cli = _cli(pipeline, "cancel", ids[0], "--reason", "changed my mind")
    assert cli.returncode == 0, cli.stderr
    await _cancel(pipeline, *ids[1:])
    views = await pipeline.wait_for([*ids, early.request_id, done.request_id], timeout_s=120)

    for request in slow:
        view = views[request.request_id]
        assert view.status == "cancelled", view
        assert view.output_image_url is None
        assert await pipeline.count_events(request.request_id, "JobCancelled") == 1
        assert await pipeline.count_events(request.request_id, "JobSucceeded") == 0
        assert await pipeline.count_events(request.request_id, "VideoStored") == 0
    assert "changed my mind" in (views[ids[0]].error_message or "")
    for protocol in PROTOCOLS:  # each provider was asked to stop its job
        assert emulator.state.stats[CANCEL_STAT[protocol]] > asked_before[protocol], protocol

    assert views[early.request_id].status == "cancelled"
    await pipeline.wait_for_log(
        "submitter", "cancelled_request_not_submitted", early.request_id, timeout_s=60
    )
    assert await pipeline.count_events(early.request_id, "JobSubmitted") == 0

    assert views[done.request_id].status == "stored"
    refused = _cli(pipeline, "cancel", done.request_id)
    assert refused.returncode == 1
    assert "already stored" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    await _cancel(pipeline, done.request_id)  # past the CLI's check: the ledger says too late
    await pipeline.wait_for_log("submitter", "cancel_too_late", done.request_id, timeout_s=60)
    assert (await pipeline.records.get(done.request_id)).status == "stored"  # type: ignore[union-attr]
    assert await pipeline.count_events(done.request_id, "JobCancelled") == 0

    # The cancelled jobs' timers are harmless: the poller stops without asking the provider.
    await pipeline.wait_for_log("poller", "cancelled_job_not_checked", ids[1], timeout_s=60)
    assert await _slots_in_use(pipeline) == dict.fromkeys(PROTOCOLS, 0)


@pytest.mark.usefixtures("roomy_emulator")
async def test_cancels_racing_completion_end_one_way_and_free_every_slot(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline(_provider_env(emulator, 20))
    for name in STAGES:
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    # Quick jobs (about a second each here), and cancels spread over the moments around their
    # end: while running, as the provider finishes, after the download.
    # Seconds after the provider accepted the job (its id is on the record) that the cancel is
    # sent: the first ones land while it runs, the last after its video is stored.
    # None: once the video is stored (that one must stay stored).
    delays: tuple[float | None, ...] = (0.0, 1.0, 2.0, 2.5, 3.0, 3.5, None)
    requests = {
        (p, delay): make_request(prefix, f"race-{p}-{i}", provider=p, seconds=4)
        for p in PROTOCOLS
        for i, delay in enumerate(delays)
    }
    async with RequestPublisher(
        pipeline.bootstrap_servers, topic_prefix=pipeline.settings.topic_prefix
    ) as publisher:
        for request in requests.values():
            await publisher.publish(request)

        async def cancel_later(rid: str, delay: float | None) -> None:
            if delay is None:
                await pipeline.wait_for([rid], until=lambda v: v.status == "stored")
            else:
                await pipeline.wait_for([rid], until=lambda v: v.sora_job_id is not None)
                await asyncio.sleep(delay)  # the delay is the experiment, not a wait
            await publisher.publish_cancel(
                CancelRequested.model_validate({"request_id": rid, "source": "test"})
            )

        await asyncio.gather(
            *(cancel_later(r.request_id, delay) for (_, delay), r in requests.items())
        )
    ids = [r.request_id for r in requests.values()]
    views = await pipeline.wait_for(ids, timeout_s=180)
    by_delay = {
        delay: sorted(views[requests[(p, delay)].request_id].status[0] for p in PROTOCOLS)
        for delay in delays
    }
    print(f"cancel race, outcome by delay after the job id (c: cancelled, s: stored): {by_delay}")
    outcomes: dict[str, int] = {}
    for rid in ids:
        status = views[rid].status
        outcomes[status] = outcomes.get(status, 0) + 1
        assert status in ("cancelled", "stored"), views[rid]
        cancelled = await pipeline.count_events(rid, "JobCancelled")
        stored = await pipeline.count_events(rid, "VideoStored")
        succeeded = await pipeline.count_events(rid, "JobSucceeded")
        if status == "cancelled":
            assert (cancelled, stored, succeeded) == (1, 0, 0), rid
        else:
            assert (cancelled, stored, succeeded) == (0, 1, 1), rid
    print(f"cancel race outcomes: {outcomes}")
    assert all(s == "c" for s in by_delay[0.0]) and all(s == "s" for s in by_delay[None])
    assert await _slots_in_use(pipeline) == dict.fromkeys(PROTOCOLS, 0)


async def test_the_gateway_cancels_a_generation_in_flight(pipeline: Pipeline) -> None:
    for name in STAGES:
        pipeline.start(name)
    gateway = start_gateway(pipeline)
    async with gateway.client() as client:
        unknown = await client.post("/v1/generations/no-such-request/cancel")
        assert unknown.status_code == 404, unknown.text
        assert unknown.headers["content-type"].startswith("application/problem+json")
        created = await client.post(
            "/v1/generations",
            json={"prompt": "a gateway owl [emulator:slow]", "provider": "azure-sora"},
        )
        assert created.status_code == 202, created.text
        rid = created.json()["request_id"]
        await pipeline.wait_for([rid], until=lambda v: v.sora_job_id is not None, timeout_s=60)
        cancelled = await client.post(f"/v1/generations/{rid}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["request_id"] == rid
        assert cancelled.headers["location"] == f"/v1/generations/{rid}"
        await pipeline.wait_for([rid], until=lambda v: v.status == "cancelled", timeout_s=60)
        record = (await client.get(f"/v1/generations/{rid}")).json()
        assert record["status"] == "cancelled" and record["terminal"] is True
        again = await client.post(f"/v1/generations/{rid}/cancel")
        assert again.status_code == 409, again.text
        assert "already cancelled" in again.json()["detail"]
    assert await pipeline.count_events(rid, "JobCancelled") == 1
    assert await _slots_in_use(pipeline) == dict.fromkeys(PROTOCOLS, 0)


async def test_a_cancel_of_a_request_that_failed_over_stops_its_child(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline(
        {**_provider_env(emulator, 2), "VIDPIPE_FAILOVER_WHEN": "immediate"}
    )
    for name in (*STAGES, "failover"):
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    # Azure cannot hand its video over; fal, the child's provider, takes its time.
    request = make_request(
        prefix,
        "lineage",
        prompt=f"a heron {prefix} [emulator:azure.download=missing] [emulator:fal.slow]",
        provider="azure-sora",
        seconds=4,
        fallbacks=["failover"],
        failover_chain=["fal"],
    )
    await pipeline.publish(request)
    rid, child = request.request_id, f"{request.request_id}.failover"
    await pipeline.wait_for([rid], until=lambda v: v.status == "failed_over", timeout_s=90)
    await pipeline.wait_for([child], until=lambda v: v.sora_job_id is not None, timeout_s=60)
    asked_before = emulator.state.stats[CANCEL_STAT["fal"]]

    # The user cancels the request they made: its job has ended, its child's has not.
    cli = _cli(pipeline, "cancel", rid)
    assert cli.returncode == 0, cli.stderr
    views = await pipeline.wait_for(
        [rid, child], until=lambda v: v.status == "cancelled", timeout_s=90
    )
    assert emulator.state.stats[CANCEL_STAT["fal"]] > asked_before  # fal was asked to stop
    assert await pipeline.count_events(child, "JobCancelled") == 1
    assert await pipeline.count_events(child, "VideoStored") == 0
    assert views[rid].failover_request_id == child
    assert (await _slots_in_use(pipeline))["fal"] == 0
