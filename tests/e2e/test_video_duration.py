"""A stored video lasts what was asked, end to end; one of the wrong length is never stored.

Stage processes on the real broker and PostgreSQL, the emulator as provider: it serves each job a
video as long as the job asked (`n_seconds` / `seconds`), or, with `[emulator:video_seconds=N]`,
one of the wrong length, as a provider that ignores the request would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.e2e.conftest import MakePipeline
from tests.e2e.harness import Pipeline, make_request
from vidpipe.db.tables import events
from vidpipe.media.sample import probe_mp4
from vidpipe.storage.validation import DURATION_TOLERANCE_S

CORE = ("submitter", "poller", "fetcher", "recorder")
# The redownloader retries a refused video twice, quickly, then gives up.
FAST_RETRIES = {
    "VIDPIPE_DOWNLOAD_ATTEMPTS": "1",
    "VIDPIPE_REDOWNLOAD_INITIAL_S": "0.5",
    "VIDPIPE_REDOWNLOAD_MAX_INTERVAL_S": "1",
    "VIDPIPE_REDOWNLOAD_MAX_ATTEMPTS": "2",
}


async def _payloads(pipeline: Pipeline, request_id: str, event_type: str) -> list[dict[str, Any]]:
    async with pipeline.records.engine.connect() as conn:
        rows = await conn.execute(
            select(events.c.payload)
            .where(events.c.request_id == request_id, events.c.event_type == event_type)
            .order_by(events.c.seq)
        )
        return [dict(row.payload) for row in rows]


def _stored_files(pipeline: Pipeline, request_id: str) -> list[Path]:
    root = Path(pipeline.env["VIDPIPE_STORAGE_URL"].removeprefix("file://")) / request_id
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


async def test_each_request_is_stored_with_a_video_of_its_own_length(pipeline: Pipeline) -> None:
    for name in CORE:
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    requests = [
        # Azure takes 1-20 seconds, /v1/videos 4, 8 or 12.
        make_request(prefix, "az3", provider="azure-sora", seconds=3),
        make_request(prefix, "az12", provider="azure-sora", seconds=12),
        make_request(prefix, "oa8", provider="openai-videos", seconds=8),
    ]
    await pipeline.publish(*requests)
    views = await pipeline.wait_for([r.request_id for r in requests])
    for request in requests:
        seconds = request.seconds
        view = views[request.request_id]
        assert view.status == "stored", view
        assert view.output_image_url is not None
        info = probe_mp4(Path(view.output_image_url.removeprefix("file://")))
        # The emulator encodes exactly the asked length; the pipeline's own tolerance is wider.
        assert info["duration"] == pytest.approx(seconds, abs=0.05), (request.request_id, info)
        assert info["frames"] > 0
        assert await pipeline.count_events(request.request_id, "VideoStored") == 1


async def test_a_video_of_the_wrong_length_is_refused_by_fetcher_and_redownloader(
    make_pipeline: MakePipeline,
) -> None:
    pipeline = await make_pipeline(FAST_RETRIES)
    for name in CORE:
        pipeline.start(name)
    prefix = pipeline.settings.topic_prefix
    # Asked 5 s, served 1 s; asked 4 s, served 12 s: both further off than max(1 s, 20 %).
    short = make_request(
        prefix,
        "short",
        prompt="a fox [emulator:video_seconds=1]",
        provider="azure-sora",
        seconds=5,
        fallbacks=["retry"],
    )
    long = make_request(
        prefix,
        "long",
        prompt="a hare [emulator:video_seconds=12]",
        provider="openai-videos",
        seconds=4,
        fallbacks=["retry"],
    )
    # Within the tolerance: asked 5 s, served 5.9 s, stored as it is.
    close = make_request(
        prefix,
        "close",
        prompt=f"an owl [emulator:video_seconds={5 + DURATION_TOLERANCE_S - 0.1:g}]",
        provider="azure-sora",
        seconds=5,
        fallbacks=["retry"],
    )
    wrong = {short.request_id: (1, 5), long.request_id: (12, 4)}
    await pipeline.publish(short, long, close)
    ids = list(wrong)
    # The fetcher alone first: the refusal rests in the records as an unavailable download.
    views = await pipeline.wait_for(ids, until=lambda v: v.status == "download_unavailable")
    for rid, (served, asked) in wrong.items():
        (unavailable,) = await _payloads(pipeline, rid, "DownloadUnavailable")
        assert unavailable["reason_code"] == "invalid_content"
        assert f"video lasts {served}s, not {asked}s" in unavailable["message"]
        message = views[rid].error_message or ""
        assert "invalid_content" in message and f"not {asked}s" in message, message
        assert _stored_files(pipeline, rid) == []
    (close_view,) = (await pipeline.wait_for([close.request_id])).values()
    assert close_view.status == "stored"

    # The redownloader checks the same length on each retry, and gives up.
    pipeline.start("redownloader")
    views = await pipeline.wait_for(ids, until=lambda v: v.status == "gave_up", timeout_s=60)
    for rid in ids:
        assert (views[rid].error_message or "").startswith("max_attempts"), views[rid]
        retries = await _payloads(pipeline, rid, "DownloadRetryScheduled")
        assert [r["attempt"] for r in retries] == [1, 2]
        # The second retry was scheduled because the first one was refused for its length.
        assert retries[1]["last_reason_code"] == "invalid_content"
        (gave_up,) = await _payloads(pipeline, rid, "DownloadGaveUp")
        assert gave_up["reason_code"] == "max_attempts"
        assert await pipeline.count_events(rid, "VideoStored") == 0
        assert _stored_files(pipeline, rid) == []
