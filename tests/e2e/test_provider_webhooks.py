"""Providers' own webhooks through the real pipeline: the emulator POSTs them to the gateway,
which checks their signatures and relays a "check now" to the poller.

The poller's first timed check is ten minutes away, so a video stored within the test's minute
was stored because of the webhook; a forged webhook is refused and the request stays where it
was, its timed check still pending (the durable poller, not the webhook, decides).
"""

from __future__ import annotations

from tests.e2e.conftest import EMULATOR_KEY, MakePipeline
from tests.e2e.gateway_harness import start_gateway
from tests.e2e.harness import Pipeline, make_request
from vidpipe.dev.emulator.config import DEV_WEBHOOK_SECRET
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.dev.emulator.webhooks import JWKS_PATH
from vidpipe.dev.processes import free_ports

CORE = ("submitter", "poller", "fetcher", "recorder")
FIRST_CHECK_S = "600"


async def _pipeline_with_hooks(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> tuple[Pipeline, str]:
    """The core stages and the gateway, fal and replicate asking for webhooks; the pipeline and
    the gateway's provider-hooks URL."""
    (port,) = free_ports(1)
    hooks = f"http://127.0.0.1:{port}/v1/provider-hooks"
    pipeline = await make_pipeline(
        {
            "VIDPIPE_FAL_BASE_URL": emulator.base_url,
            "VIDPIPE_FAL_API_KEY": EMULATOR_KEY,
            "VIDPIPE_FAL_WEBHOOK_URL": f"{hooks}/fal",
            "VIDPIPE_FAL_WEBHOOK_JWKS_URL": f"{emulator.base_url}{JWKS_PATH}",
            "VIDPIPE_REPLICATE_BASE_URL": emulator.base_url,
            "VIDPIPE_REPLICATE_API_TOKEN": EMULATOR_KEY,
            "VIDPIPE_REPLICATE_WEBHOOK_URL": f"{hooks}/replicate",
            "VIDPIPE_REPLICATE_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET,
            # /v1/videos: the endpoint is the project's (the emulator's openai_webhook_url).
            "VIDPIPE_OPENAI_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET,
            "VIDPIPE_POLL_FIRST_S": FIRST_CHECK_S,
            "VIDPIPE_POLL_INTERVAL_S": FIRST_CHECK_S,
        }
    )
    start_gateway(pipeline, port=port)
    for name in CORE:
        pipeline.start(name)
    return pipeline, hooks


async def test_a_genuine_webhook_gets_the_video_stored_before_any_timed_check(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> None:
    pipeline, hooks = await _pipeline_with_hooks(make_pipeline, emulator)
    prefix = pipeline.settings.topic_prefix
    fal = make_request(prefix, "fal", provider="fal")
    replicate = make_request(prefix, "replicate", provider="replicate")
    videos = make_request(prefix, "videos", provider="openai-videos")
    emulator.update_config(openai_webhook_url=f"{hooks}/openai-videos")
    try:
        await pipeline.publish(fal, replicate, videos)
        ids = [fal.request_id, replicate.request_id, videos.request_id]
        views = await pipeline.wait_for(ids, timeout_s=60)
    finally:
        emulator.update_config(openai_webhook_url=None)
    assert {v.status for v in views.values()} == {"stored"}, views
    poller_log = pipeline.stack.processes["poller"].log_path.read_text().splitlines()
    for request in (fal, replicate, videos):
        assert await pipeline.count_events(request.request_id, "JobSucceeded") == 1
        mine = [line for line in poller_log if f"request_id={request.request_id} " in f"{line} "]
        # The hint's check announced the end; no timed check did (its `job_succeeded` line).
        assert any("hinted_check" in line and "verdict=succeeded" in line for line in mine), mine
        assert not any("job_succeeded" in line for line in mine), mine
    await pipeline.wait_for_log("gateway", "provider_hook_hinted", fal.request_id)


async def test_a_forged_webhook_is_refused_and_changes_nothing(
    make_pipeline: MakePipeline, emulator: EmulatorThread
) -> None:
    pipeline, _hooks = await _pipeline_with_hooks(make_pipeline, emulator)
    prefix = pipeline.settings.topic_prefix
    request = make_request(prefix, "forged", provider="replicate")
    refused_before = emulator.state.stats["replicate.webhooks_answered_401"]
    emulator.update_config(webhooks="forged")
    try:
        await pipeline.publish(request)
        await pipeline.wait_for(
            [request.request_id], until=lambda v: v.status == "submitted", timeout_s=60
        )
        await pipeline.wait_for_log("gateway", "provider_hook_refused", "replicate")
    finally:
        emulator.update_config(webhooks="ok")
    assert emulator.state.stats["replicate.webhooks_answered_401"] == refused_before + 1
    # The job has ended at the emulator, but only the provider's answer to a check can say so:
    # the record stays submitted, with nothing announced, until the timed check comes.
    (view,) = (await pipeline.records.many([request.request_id])).values()
    assert view.status == "submitted"
    assert await pipeline.count_events(request.request_id, "JobSucceeded") == 0
