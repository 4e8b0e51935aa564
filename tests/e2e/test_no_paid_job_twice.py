"""No paid job twice, end to end: a create whose answer is lost, and a submitter killed between
the provider's create and its ledger write, each leave exactly one job in the emulator's books."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Pipeline, make_request
from vidpipe.dev.emulator.server import EmulatorThread

STAGES = ("submitter", "poller", "fetcher", "recorder")


def _jobs_for(emulator: EmulatorThread, prompt: str) -> int:
    """The provider's own books: how many jobs were created for this prompt."""
    return sum(job.prompt == prompt for job in list(emulator.state.jobs.values()))


async def test_a_create_whose_answer_is_lost_is_adopted_not_repeated(
    pipeline: Pipeline, emulator: EmulatorThread
) -> None:
    for name in STAGES:
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    # The emulator creates the job, drops the connection and forgets the Idempotency-Key, on
    # every create with this prompt: a second create would show as a second job.
    requests = [
        make_request(
            prefix,
            f"lost-{provider}",
            prompt=f"lost answer {uuid.uuid4().hex} [emulator:drop_after_create]",
            provider=provider,
            seconds=4,
        )
        for provider in ("azure-sora", "openai-videos")
    ]
    await pipeline.publish(*requests)
    views = await pipeline.wait_for([r.request_id for r in requests], timeout_s=60)
    for request in requests:
        assert views[request.request_id].status == "stored", views[request.request_id]
        assert _jobs_for(emulator, request.prompt) == 1
        assert await pipeline.count_events(request.request_id, "JobSubmitted") == 1
    await pipeline.wait_for_log("submitter", "lost_create_adopted", requests[0].request_id)


@pytest.fixture
def no_idempotency(emulator: EmulatorThread) -> Iterator[EmulatorThread]:
    """The emulator as a provider that ignores Idempotency-Key: a second create is a second job."""
    emulator.update_config(idempotency=False)
    try:
        yield emulator
    finally:
        emulator.update_config(idempotency=True, fault_slow_share=0.0, fault_slow_seconds=0.0)


async def test_a_submitter_killed_between_create_and_ledger_write_pays_once(
    pipeline: Pipeline, no_idempotency: EmulatorThread
) -> None:
    emulator = no_idempotency
    for name in ("poller", "fetcher", "recorder"):
        pipeline.start(name)
    doomed = pipeline.start("submitter")
    await pipeline.wait_for_group("submitter", 1)
    request = make_request(
        pipeline.settings.topic_prefix,
        "killed",
        prompt=f"killed submitter {uuid.uuid4().hex}",
        provider="azure-sora",
    )
    # The provider makes the job, then holds its answer: the submitter has sent the create and
    # not yet written the job to its ledger. SIGKILL it right there.
    emulator.update_config(fault_slow_share=1.0, fault_slow_seconds=120.0)
    await pipeline.publish(request)
    deadline = time.monotonic() + 60
    while _jobs_for(emulator, request.prompt) == 0:
        assert time.monotonic() < deadline, "the create never reached the provider"
        await asyncio.sleep(0.05)
    doomed.kill()
    emulator.update_config(fault_slow_share=0.0)
    assert _jobs_for(emulator, request.prompt) == 1
    assert await pipeline.count_events(request.request_id, "JobSubmitted") == 0
    # Restart it; the redelivered request must adopt the job, not create a second one.
    pipeline.start("submitter")
    views = await pipeline.wait_for([request.request_id], timeout_s=90)
    assert views[request.request_id].status == "stored", views[request.request_id]
    assert _jobs_for(emulator, request.prompt) == 1
    assert await pipeline.count_events(request.request_id, "JobSubmitted") == 1
