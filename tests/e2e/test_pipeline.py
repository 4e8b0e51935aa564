"""End to end on the real broker and PostgreSQL: four stage processes, the emulator as provider."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import Pipeline, make_request
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.media.sample import probe_mp4


async def test_prompts_become_stored_playable_videos(pipeline: Pipeline) -> None:
    for name in ("submitter", "poller", "fetcher", "recorder"):
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    requests = [
        make_request(prefix, "azure", provider="azure-sora"),
        make_request(prefix, "openai", provider="openai-videos", seconds=4),
    ]
    await pipeline.publish(*requests)
    views = await pipeline.wait_for([r.request_id for r in requests])
    for request in requests:
        view = views[request.request_id]
        assert view.status == "stored", view
        assert view.output_image_url is not None
        info = probe_mp4(Path(view.output_image_url.removeprefix("file://")))
        assert info["frames"] > 0
        assert view.sora_job_id
        for event_type in ("GenerationRequested", "JobSubmitted", "JobSucceeded", "VideoStored"):
            assert await pipeline.count_events(request.request_id, event_type) == 1, event_type


async def test_poller_killed_mid_flight_loses_no_job_and_repeats_none(pipeline: Pipeline) -> None:
    for name in ("submitter", "fetcher", "recorder"):
        pipeline.start(name)
    poller = pipeline.start("poller")
    prefix = pipeline.settings.topic_prefix
    # Slow jobs, spread over both providers so Azure's quota of 2 is not the bottleneck.
    requests = [
        make_request(
            prefix,
            f"chaos{i}",
            provider=("azure-sora", "openai-videos")[i % 2],
            prompt=f"chaos {i} [emulator:slow]",
            seconds=(5, 4)[i % 2],  # /v1/videos takes 4, 8 or 12 seconds
        )
        for i in range(4)
    ]
    await pipeline.publish(*requests)
    ids = [r.request_id for r in requests]
    # Kill the poller once every job is in flight at the provider (and it has polled some).
    await pipeline.wait_for(ids, until=lambda v: v.status in ("running", "queued", "submitted"))
    await pipeline.wait_for(ids[:1], until=lambda v: v.status == "running")
    poller.kill()
    views = await pipeline.records.many(ids)
    assert not any(v.status == "stored" for v in views.values()), "killed too late to mean much"
    pipeline.start("poller", instance=1)
    views = await pipeline.wait_for(ids, timeout_s=180)
    assert {v.status for v in views.values()} == {"stored"}
    for rid in ids:
        assert await pipeline.count_events(rid, "JobSucceeded") == 1
        assert await pipeline.count_events(rid, "VideoStored") == 1


async def test_malformed_request_is_dead_lettered_and_the_next_one_completes(
    pipeline: Pipeline,
) -> None:
    for name in ("submitter", "poller", "fetcher", "recorder"):
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    await pipeline.publish_raw(b"{this is not json", key=f"{prefix}broken")
    await pipeline.publish_raw(b'{"request_id": "ok-id", "prompt": ""}', key="ok-id")
    good = make_request(prefix, "after-poison", provider="azure-sora")
    await pipeline.publish(good)

    # Both the submitter and the recorder read the requests topic, so each dead-letters both.
    letters = await pipeline.read_topic(pipeline.settings.topics.deadletter, want=4)
    assert {dl["stage"] for dl in letters} == {"submitter", "recorder"}
    submitter_letters = [dl for dl in letters if dl["stage"] == "submitter"]
    reasons = {dl["original_value"]: dl["reason"] for dl in submitter_letters}
    assert len(submitter_letters) == 2
    assert "{this is not json" in reasons
    assert "prompt" in reasons['{"request_id": "ok-id", "prompt": ""}']
    for letter in submitter_letters:
        assert letter["original_topic"] == pipeline.settings.topics.generation_requested
        assert letter["original_offset"] >= 0

    views = await pipeline.wait_for([good.request_id])
    assert views[good.request_id].status == "stored"


async def test_azure_quota_of_two_makes_the_rest_wait_and_none_is_dropped(
    pipeline: Pipeline, emulator: EmulatorThread
) -> None:
    for name in ("submitter", "poller", "fetcher", "recorder"):
        pipeline.start(name)
    before = dict(emulator.state.stats)
    prefix = pipeline.settings.topic_prefix
    requests = [make_request(prefix, f"quota{i}", provider="azure-sora") for i in range(5)]
    await pipeline.publish(*requests)
    views = await pipeline.wait_for([r.request_id for r in requests], timeout_s=180)
    assert {v.status for v in views.values()} == {"stored"}
    after = dict(emulator.state.stats)

    def delta(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    # The emulator enforces Azure's 2 concurrent jobs with 429s: the submitter never hit one,
    # because it held the other three back itself, and it created each job exactly once.
    assert delta("azure.creates_rejected_429") == 0
    assert delta("azure.jobs_created") == 5
    for request in requests:
        assert await pipeline.count_events(request.request_id, "JobSubmitted") == 1
