"""`VIDPIPE_CONSUMER_WORKERS`: several consumers per subscriber inside one stage process.

Each worker is its own member of the stage's group with its own partitions, so one process
checks jobs on several partitions side by side; the pipeline's results are the same.
"""

from __future__ import annotations

from tests.e2e.conftest import MakePipeline
from tests.e2e.harness import make_request
from vidpipe.dev.emulator.server import EmulatorThread

JOBS = 12


async def test_one_poller_process_with_three_workers_shares_its_partitions(
    make_pipeline: MakePipeline, roomy_emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline(
        {
            "VIDPIPE_TOPIC_PARTITIONS": "6",
            "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": "50",
            "VIDPIPE_OPENAI_MAX_CONCURRENT_JOBS": "50",
            "VIDPIPE_CONSUMER_WORKERS": "3",
        }
    )
    for stage in ("submitter", "poller", "fetcher", "recorder"):
        pipeline.start(stage)
    # The poller has two subscribers (job.submitted, poller.due): three members each; the
    # recorder's batch subscriber stays one consumer.
    await pipeline.wait_for_group("poller", members=6)
    await pipeline.wait_for_group("fetcher", members=3)
    await pipeline.wait_for_group("recorder", members=1)

    requests = [make_request(pipeline.settings.topic_prefix, f"w{i}") for i in range(JOBS)]
    await pipeline.publish(*requests)
    views = await pipeline.wait_for([r.request_id for r in requests], timeout_s=120)
    assert {v.status for v in views.values()} == {"stored"}
    for request in requests:
        # Each job announced once, whichever worker held its partition.
        assert await pipeline.count_events(request.request_id, "JobSucceeded") == 1
        assert await pipeline.count_events(request.request_id, "VideoStored") == 1
