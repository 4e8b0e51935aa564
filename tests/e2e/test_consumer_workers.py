"""Parallelism inside one stage process, both kinds, on the real broker.

- The main path (submitter, poller, fetcher) takes consumer batches and handles their requests
  side by side (`VIDPIPE_HANDLER_CONCURRENCY`): one consumer per subscriber, whatever
  `VIDPIPE_CONSUMER_WORKERS` says.
- A per-message stage (the fallbacks, here the placeholder) runs `VIDPIPE_CONSUMER_WORKERS`
  consumers per subscriber, each its own member of the group with its own partitions.

Either way the pipeline's results are the same: each job announced once, each request stored.
"""

from __future__ import annotations

from tests.e2e.conftest import MakePipeline
from tests.e2e.harness import make_request
from vidpipe.dev.emulator.server import EmulatorThread

JOBS = 12
MISSING = 4


async def test_batches_on_the_main_path_and_three_workers_on_a_fallback(
    make_pipeline: MakePipeline, roomy_emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline(
        {
            "VIDPIPE_TOPIC_PARTITIONS": "6",
            "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": "50",
            "VIDPIPE_OPENAI_MAX_CONCURRENT_JOBS": "50",
            "VIDPIPE_CONSUMER_WORKERS": "3",
            "VIDPIPE_HANDLER_CONCURRENCY": "4",
            "VIDPIPE_DOWNLOAD_ATTEMPTS": "1",
        }
    )
    for stage in ("submitter", "poller", "fetcher", "recorder", "placeholder"):
        pipeline.start(stage)
    # The poller has two subscribers (job.submitted, poller.due), one consumer each.
    await pipeline.wait_for_group("poller", members=2)
    await pipeline.wait_for_group("fetcher", members=1)
    await pipeline.wait_for_group("recorder", members=1)
    await pipeline.wait_for_group("placeholder", members=3)

    prefix = pipeline.settings.topic_prefix
    stored = [make_request(prefix, f"w{i}") for i in range(JOBS)]
    missing = [
        make_request(
            prefix, f"m{i}", prompt="an owl [emulator:download=missing]", fallbacks=["placeholder"]
        )
        for i in range(MISSING)
    ]
    await pipeline.publish(*stored, *missing)
    views = await pipeline.wait_for([r.request_id for r in stored], timeout_s=120)
    assert {v.status for v in views.values()} == {"stored"}
    for request in stored:
        # Each job announced once, whichever request of a batch it was handled beside.
        assert await pipeline.count_events(request.request_id, "JobSucceeded") == 1
        assert await pipeline.count_events(request.request_id, "VideoStored") == 1
    for request in missing:
        # The placeholder's three workers, whichever held the partition, stored it once.
        await pipeline.wait_for_events(request.request_id, "VideoStored", 1)
        assert await pipeline.count_events(request.request_id, "DownloadUnavailable") == 1
