"""Recording a batch in one transaction writes what recording its events one by one writes.

The recorder and `vidpipe replay records` record whole consumer batches (`Records.record_many`);
the projection then runs in memory over rows read once. These tests hold it to the one-by-one
path on SQLite and PostgreSQL, for streams in any order, with duplicates inside and across
batches, and with failover children whose parents' rows change in the same batch.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import (
    DownloadUnavailable,
    Event,
    GenerationRequested,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    VideoStored,
)
from vidpipe.db.records import Records
from vidpipe.db.tables import events, open_engine, projects

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
# Columns that differ between two databases however the events were recorded.
_UNSTABLE = {"id", "created_at", "updated_at"}


def _request_stream(
    rid: str, *, parent: str | None = None, placeholder: bool = True
) -> list[Event]:
    def eid() -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"{rid}/{len(stream)}")

    stream: list[Event] = []
    job = f"task_{rid}"
    stream.append(
        GenerationRequested(
            event_id=eid(), request_id=rid, prompt=f"a fox {rid}", parent_request_id=parent
        )
    )
    stream.append(
        JobSubmitted(
            event_id=eid(),
            request_id=rid,
            provider="azure-sora",
            provider_job_id=job,
            endpoint_host="h",
        )
    )
    for progress in (30, 70):
        stream.append(
            JobProgressed(
                event_id=eid(),
                request_id=rid,
                provider="azure-sora",
                provider_job_id=job,
                status="running",
                provider_status="running",
                progress=progress,
            )
        )
    stream.append(
        JobSucceeded(
            event_id=eid(),
            request_id=rid,
            provider="azure-sora",
            provider_job_id=job,
            generation_ids=["g"],
        )
    )
    if placeholder:
        stream.append(
            DownloadUnavailable(
                event_id=eid(),
                request_id=rid,
                provider="azure-sora",
                provider_job_id=job,
                generation_id="g",
                reason_code="not_found",
                message="gone",
                attempted_at=NOW,
                expires_at=NOW + timedelta(hours=1),
            )
        )
        stream.append(
            VideoStored(
                event_id=eid(),
                request_id=rid,
                storage_url=f"file:///placeholder-{rid}.mp4",
                size_bytes=1,
                sha256="1" * 64,
                generation_id="g",
                placeholder=True,
            )
        )
    if parent is not None or not placeholder:
        stream.append(
            VideoStored(
                event_id=eid(),
                request_id=rid,
                storage_url=f"file:///{rid}.mp4",
                size_bytes=10,
                sha256="0" * 64,
                generation_id="g",
            )
        )
    return stream


def _mixed_stream(seed: int) -> list[tuple[Event, str]]:
    rng = random.Random(seed)
    stream: list[Event] = []
    for n in range(12):
        rid = f"r{seed}-{n}"
        failed_over = n % 3 == 0
        stream += _request_stream(rid, placeholder=failed_over or n % 2 == 0)
        if failed_over:
            stream += _request_stream(f"{rid}-child", parent=rid, placeholder=False)
    # Any order (the topics are not ordered with each other), and redeliveries of some events.
    rng.shuffle(stream)
    stream += rng.sample(stream, 15)
    rng.shuffle(stream)
    return [(event, event.event_type) for event in stream]


async def _rows(engine: AsyncEngine) -> tuple[dict[str, dict[str, Any]], list[str]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(projects))).mappings().all()
        logged = (await conn.execute(select(events.c.event_id).order_by(events.c.seq))).all()
    table = {r["request_id"]: {k: v for k, v in r.items() if k not in _UNSTABLE} for r in rows}
    return table, [e[0] for e in logged]


@pytest.fixture(params=["sqlite", "postgresql"])
async def new_engine(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str
) -> AsyncIterator[Callable[[], Any]]:
    opened: list[AsyncEngine] = []
    counter = iter(range(1000))

    async def make() -> AsyncEngine:
        n = next(counter)
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path}/records-{n}.db"
        else:
            import psycopg
            from psycopg import sql
            from sqlalchemy.engine import make_url

            name = f"batch_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        engine = await open_engine(url)
        opened.append(engine)
        return engine

    yield make
    for engine in opened:
        await engine.dispose()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_batches_write_what_one_by_one_writes(
    new_engine: Callable[[], Any], seed: int
) -> None:
    stream = _mixed_stream(seed)
    one_by_one = Records(await new_engine(), clock=lambda: NOW)
    fresh_one = [await one_by_one.record(event, topic) for event, topic in stream]

    batched = Records(await new_engine(), clock=lambda: NOW)
    rng = random.Random(seed)
    fresh_batched: list[bool] = []
    at = 0
    while at < len(stream):
        size = rng.choice([1, 2, 7, 40, 200])
        fresh_batched += await batched.record_many(stream[at : at + size])
        at += size

    assert fresh_batched == fresh_one
    rows_one, log_one = await _rows(one_by_one.engine)
    rows_batched, log_batched = await _rows(batched.engine)
    assert log_batched == log_one
    assert rows_batched == rows_one
    # The streams really exercise the fallbacks: placeholders, real videos, failed-over parents.
    statuses = {row["status"] for row in rows_one.values()}
    assert {"stored", "placeholder"} <= statuses
    assert any(row["failover_request_id"] for row in rows_one.values())


async def test_a_batch_holding_an_event_twice_records_it_once(
    new_engine: Callable[[], Any],
) -> None:
    records = Records(await new_engine(), clock=lambda: NOW)
    stream = [(e, e.event_type) for e in _request_stream("dup", placeholder=False)]
    fresh = await records.record_many(stream + stream[:3])
    assert fresh == [True] * len(stream) + [False] * 3
    assert await records.record_many(stream) == [False] * len(stream)
    view = await records.get("dup")
    assert view is not None and view.status == "stored"
    assert await records.event_types("dup") == [e.event_type for e, _ in stream]
