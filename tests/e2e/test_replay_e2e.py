"""Replay for recovery, end to end: the four core stages on the real broker and PostgreSQL.

After a mixed run (stored, failed by moderation, download unavailable):
- `vidpipe replay records` into an empty SQLite file rebuilds exactly the live `projects` rows;
- `vidpipe replay redrive` of job.succeeded makes the fetcher see every JobSucceeded again, and
  nothing is duplicated: no event, no provider job, no stored file.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from schemas.events import PUBLIC_EVENTS
from services.registry import CORE_STAGES
from tests.e2e.conftest import MakePipeline
from tests.e2e.harness import Pipeline, make_request, wait_until_consumed
from tests.integration.test_replay import project_rows
from vidpipe.db.tables import events, open_engine
from vidpipe.dev.emulator.server import EmulatorThread
from vidpipe.ops.offsets import end_offsets

ROOT = Path(__file__).resolve().parents[2]
ENDED = {"stored", "failed", "download_unavailable"}


async def _vidpipe(pipeline: Pipeline, *args: str) -> str:
    """Run the real CLI as a subprocess against the pipeline; its stdout (fails on non-zero)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vidpipe",
        *args,
        cwd=ROOT,
        env={**os.environ, **pipeline.env, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"vidpipe {' '.join(args)} -> {proc.returncode}\n{err.decode()}"
    return out.decode()


async def _settle(pipeline: Pipeline, stage: str, topics: list[str]) -> None:
    """Wait until `stage`'s group has committed everything now on `topics` (no fixed sleeps)."""
    targets = await end_offsets(pipeline.bootstrap_servers, topics)
    await wait_until_consumed(
        pipeline.bootstrap_servers, pipeline.settings.group_id(stage), targets, timeout_s=90
    )


async def _event_counts(pipeline: Pipeline, prefix: str) -> Counter[tuple[str, str]]:
    async with pipeline.records.engine.connect() as conn:
        rows = await conn.execute(
            select(events.c.request_id, events.c.event_type).where(
                events.c.request_id.startswith(prefix)
            )
        )
        return Counter((rid, kind) for rid, kind in rows)


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


async def test_replay_rebuilds_the_live_table_and_a_redrive_duplicates_nothing(
    make_pipeline: MakePipeline, emulator: EmulatorThread, tmp_path: Path
) -> None:
    pipeline = await make_pipeline()
    for name in CORE_STAGES:
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    topics = pipeline.settings.topics
    recorder_topics = [topics.for_event(model) for model in PUBLIC_EVENTS]
    # Whole seconds, written as ISO 8601 with Z: the form an operator would type.
    started = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    requests = [
        make_request(prefix, "azure", provider="azure-sora"),
        make_request(prefix, "openai", provider="openai-videos", seconds=4),
        make_request(prefix, "azure-small", provider="azure-sora", size="854x480"),
        make_request(
            prefix,
            "moderated",
            prompt="a storm at sea [emulator:fail=output_moderation]",
            provider="azure-sora",
        ),
        make_request(
            prefix,
            "missing",
            prompt="an owl [emulator:download=missing]",
            provider="openai-videos",
            seconds=4,
        ),
    ]
    await pipeline.publish(*requests)
    ids = [r.request_id for r in requests]
    views = await pipeline.wait_for(ids, until=lambda v: v.status in ENDED, timeout_s=180)
    assert {rid.removeprefix(prefix): v.status for rid, v in views.items()} == {
        "azure": "stored",
        "openai": "stored",
        "azure-small": "stored",
        "moderated": "failed",
        "missing": "download_unavailable",
    }
    # Late messages (a JobProgressed behind its JobSucceeded) may still be on their way.
    await _settle(pipeline, "recorder", recorder_topics)

    # (a) The records, rebuilt from the events log alone, equal the live table.
    rebuilt_db = tmp_path / "rebuilt.db"
    out = await _vidpipe(pipeline, "replay", "records", "--target-url", f"sqlite:///{rebuilt_db}")
    assert "projects built" in out
    live = await project_rows(pipeline.records.engine, prefix)
    rebuilt_engine = await open_engine(f"sqlite:///{rebuilt_db}", create=False)
    try:
        rebuilt = await project_rows(rebuilt_engine, prefix)
    finally:
        await rebuilt_engine.dispose()
    assert set(live) == set(ids)
    assert rebuilt == live

    # (b) Redrive every JobSucceeded of the run: the fetcher handles each again, and nothing
    # is duplicated.
    videos = Path(pipeline.env["VIDPIPE_STORAGE_URL"].removeprefix("file://"))
    files_before = _files(videos)
    # One video per stored request (each with the storage's metadata sidecar).
    assert len([f for f in files_before if f.endswith(".mp4")]) == 3
    counts_before = await _event_counts(pipeline, prefix)
    stats_before = dict(emulator.state.stats)
    outputs = [topics.video_stored, topics.download_unavailable]
    outputs_before = await end_offsets(pipeline.bootstrap_servers, outputs)

    out = await _vidpipe(
        pipeline, "replay", "redrive", "--topic", "job.succeeded", "--since", started
    )
    assert re.search(r"\b4 matched, 4 sent\b", out), out
    await _settle(pipeline, "fetcher", [topics.job_succeeded])
    # The fetcher commits after publishing, so its re-announcements are on the topics now.
    outputs_after = await end_offsets(pipeline.bootstrap_servers, outputs)
    grew: Counter[str] = Counter()
    for tp, end in outputs_after.items():
        grew[tp.topic] += end - outputs_before[tp]
    # Proof the redrive reached the fetcher: each stored video announced again (from storage,
    # not downloaded), the missing one reported unavailable again.
    assert dict(grew) == {topics.video_stored: 3, topics.download_unavailable: 1}, grew
    await _settle(pipeline, "recorder", recorder_topics)

    assert await _event_counts(pipeline, prefix) == counts_before
    for rid in ids[:3]:
        assert await pipeline.count_events(rid, "VideoStored") == 1
    assert await project_rows(pipeline.records.engine, prefix) == live
    stats_after = dict(emulator.state.stats)
    for key in ("azure.jobs_created", "openai.jobs_created"):
        assert stats_after.get(key, 0) == stats_before.get(key, 0), key
    assert _files(videos) == files_before
