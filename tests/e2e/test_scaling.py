"""Scaling one stage on its own: three pollers and two fetchers share the work, and when one of
each is killed mid-flight the survivors take its partitions over; no job is lost or doubled."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.conftest import MakePipeline
from tests.e2e.harness import make_request
from vidpipe.dev.emulator.server import EmulatorThread

JOBS = 12


def _count_videos(storage_url: str) -> int:
    return len(list(Path(storage_url.removeprefix("file://")).rglob("*.mp4")))


def _polled_jobs(log: Path) -> set[str]:
    # The poller's `job_checked` lines (DEBUG), in console or JSON format.
    checked = [line for line in log.read_text().splitlines() if "job_checked" in line]
    pattern = r"provider_job_id\W+((?:task|video)_[0-9a-z]+)"
    return {job for line in checked for job in re.findall(pattern, line)}


async def test_pollers_and_fetchers_rebalance_after_a_kill(
    make_pipeline: MakePipeline, roomy_emulator: EmulatorThread
) -> None:
    pipeline = await make_pipeline(
        {
            "VIDPIPE_TOPIC_PARTITIONS": "6",
            "VIDPIPE_AZURE_MAX_CONCURRENT_JOBS": "50",
            "VIDPIPE_OPENAI_MAX_CONCURRENT_JOBS": "50",
            "VIDPIPE_LOG_LEVEL": "DEBUG",
        }
    )
    pipeline.start("submitter")
    pipeline.start("recorder")
    pollers = [pipeline.start("poller", i) for i in range(3)]
    fetchers = [pipeline.start("fetcher", i) for i in range(2)]
    # Each stage process has two consumers in its group (its input topic, its due topic for the
    # poller): wait until every replica has joined, so the partitions are shared from the start.
    await pipeline.wait_for_group("poller", members=6)
    await pipeline.wait_for_group("fetcher", members=2)
    # And the pollers' timer relays: a relay group still rebalancing holds every first check
    # (up to its 10 s session timeout), and the jobs would finish before anyone looked.
    # On a loaded machine a relay can join late and hold this group's first rebalance past a
    # minute (a fresh-clone CI run saw it): the wait is bounded, and longer than for the others.
    await pipeline.wait_for_group("poller.timers", members=3, timeout_s=150)
    before = dict(roomy_emulator.state.stats)
    prefix = pipeline.settings.topic_prefix
    requests = [
        make_request(
            prefix,
            f"scale{i}",
            # 40 emulated seconds: 8 real ones in flight, long enough to kill a poller mid-way.
            prompt=f"scale {i} [emulator:duration=40]",
            provider=("azure-sora", "openai-videos")[i % 2],
            seconds=(5, 4)[i % 2],
        )
        for i in range(JOBS)
    ]
    await pipeline.publish(*requests)
    ids = [r.request_id for r in requests]
    await pipeline.wait_for(ids, until=lambda v: v.status in ("submitted", "queued", "running"))
    await pipeline.wait_for(ids, until=lambda v: v.status in ("queued", "running"))

    busy = [p for p in pollers if _polled_jobs(p.log_path)]
    assert len(busy) >= 2, "the pollers did not share the partitions"
    victim = busy[0]
    orphaned = _polled_jobs(victim.log_path)
    victim.kill()
    fetchers[0].kill()
    views = await pipeline.records.many(ids)
    assert not any(v.status == "stored" for v in views.values()), "killed too late"

    views = await pipeline.wait_for(ids, until=lambda v: v.status == "stored", timeout_s=180)
    assert {v.status for v in views.values()} == {"stored"}
    # The victim's jobs were finished by the pollers that took its partitions over.
    survivors = set().union(*(_polled_jobs(p.log_path) for p in pollers if p is not victim))
    assert orphaned <= survivors
    after = dict(roomy_emulator.state.stats)
    created = sum(
        after.get(k, 0) - before.get(k, 0) for k in ("azure.jobs_created", "openai.jobs_created")
    )
    assert created == JOBS, "a job was submitted twice"
    for rid in ids:
        assert await pipeline.count_events(rid, "JobSucceeded") == 1
        assert await pipeline.count_events(rid, "VideoStored") == 1
    assert _count_videos(pipeline.env["VIDPIPE_STORAGE_URL"]) == JOBS
