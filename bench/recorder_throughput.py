"""Events per second that the recorder's `Records.record` sustains, vs a plain INSERT floor.

For each backend (a SQLite file in WAL mode, and a throwaway PostgreSQL from
`vidpipe.dev.postgres.LocalPostgres`):

- record: every event of N requests through `Records.record` (log + dedupe + projection), one
  transaction per event, one at a time, as the recorder handles them, into a fresh database.
- with duplicates: then the whole stream again into that database (Kafka's redelivery: an
  uncommitted batch replayed), so every event is delivered twice; each second delivery must be
  refused (`record` returns False) and should cost less than the first. Figure: deliveries/s over
  both passes.
- plain insert (baseline): the same payloads INSERTed into a bare table with no unique key and no
  projection, one transaction per event, in a fresh database: the floor cost of the database and
  driver as vidpipe uses them (SQLAlchemy async engine, pre-ping, one transaction per event).

Per request the mix is GenerationRequested, JobSubmitted, 3 x JobProgressed, JobSucceeded,
VideoStored, with the payloads the real stages attach (request snapshots, ids, hashes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import BenchResult
from schemas.events import (
    Event,
    GenerationRequested,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    RequestSnapshot,
    VideoStored,
    derive_event_id,
)
from schemas.topics import Topics
from vidpipe.db.records import Records
from vidpipe.db.tables import open_engine, projects

__all__ = ["build_stream", "run"]

Stream = list[tuple[Event, str]]
# A few requests recorded before the clock starts: connection set-up, statement caches, the
# first pages of each table. Kept out of every figure.
_WARMUP_REQUESTS = 3
_PROMPT = (
    "A slow dolly shot through a rain-soaked neon market at night, steam rising from food "
    "stalls, reflections on wet cobblestones, shallow depth of field, 35mm film grain."
)

# The baseline's table: the event log's columns, but no unique key, no index, no projection.
_plain_metadata = MetaData()
plain_events = Table(
    "bench_plain_events",
    _plain_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSON, nullable=False),
)


def build_stream(requests: int, tag: str) -> Stream:
    """(event, topic) pairs for `requests` generations, each request's events in order."""
    topics = Topics()
    stream: Stream = []
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(requests):
        rid = f"bench-{tag}-{i:05d}"
        at = start + timedelta(seconds=i)
        job_id = f"task_01j{i:021d}"
        gen_id = f"gen_01j{i:021d}"
        request = GenerationRequested(
            request_id=rid,
            occurred_at=at,
            prompt=_PROMPT,
            provider="azure-sora",
            model="sora",
            fallbacks=["placeholder", "notify", "retry"],
            callback_url="https://app.example.com/hooks/video",
            metadata={"user_id": f"user-{i % 97}", "project": "bench"},
        )
        snapshot = RequestSnapshot.of(request)
        common: dict[str, Any] = {
            "request_id": rid,
            "provider": "azure-sora",
            "provider_job_id": job_id,
            "endpoint_host": "bench-resource.openai.azure.com",
        }
        events: list[Event] = [
            request,
            JobSubmitted(
                event_id=derive_event_id(rid, "JobSubmitted"),
                occurred_at=at + timedelta(seconds=1),
                causation_id=request.event_id,
                request=snapshot,
                model="sora",
                expires_at=at + timedelta(days=1),
                **common,
            ),
        ]
        for step, (status, raw, progress) in enumerate(
            [("queued", "queued", 0), ("running", "preprocessing", 20), ("running", "running", 70)]
        ):
            events.append(
                JobProgressed(
                    event_id=derive_event_id(rid, "JobProgressed", step),
                    occurred_at=at + timedelta(seconds=10 * (step + 1)),
                    causation_id=events[1].event_id,
                    status=status,
                    provider_status=raw,
                    progress=progress,
                    **common,
                )
            )
        events.append(
            JobSucceeded(
                event_id=derive_event_id(rid, "JobSucceeded"),
                occurred_at=at + timedelta(seconds=60),
                causation_id=events[1].event_id,
                request=snapshot,
                generation_ids=[gen_id],
                expires_at=at + timedelta(days=1),
                **common,
            )
        )
        events.append(
            VideoStored(
                event_id=derive_event_id(rid, "VideoStored", 0),
                occurred_at=at + timedelta(seconds=65),
                request_id=rid,
                causation_id=events[-1].event_id,
                provider="azure-sora",
                provider_job_id=job_id,
                generation_id=gen_id,
                storage_url=f"file:///srv/videos/{rid}/0-{gen_id}.mp4",
                size_bytes=4_200_000 + i,
                sha256=f"{i:064x}",
            )
        )
        stream.extend((event, topics.for_event(event)) for event in events)
    return stream


async def _record_all(records: Records, stream: Stream) -> float:
    started = time.perf_counter()
    for event, topic in stream:
        if not await records.record(event, topic):
            raise RuntimeError(f"{event.event_type} of {event.request_id} refused as a duplicate")
    return time.perf_counter() - started


async def _redeliver_all(records: Records, stream: Stream) -> float:
    """Deliver every already-recorded event again; each must be refused as a duplicate."""
    started = time.perf_counter()
    for event, topic in stream:
        if await records.record(event, topic):
            raise RuntimeError(f"{event.event_type} of {event.request_id} recorded twice")
    return time.perf_counter() - started


async def _plain_insert_all(engine: AsyncEngine, stream: Stream) -> float:
    started = time.perf_counter()
    for event, topic in stream:
        # The same row Records.record logs (including the JSON round trip), minus the dedupe
        # and the projection: the floor.
        async with engine.begin() as conn:
            await conn.execute(
                insert(plain_events).values(
                    event_id=str(event.event_id),
                    request_id=event.request_id,
                    event_type=event.event_type,
                    topic=topic,
                    occurred_at=event.occurred_at,
                    recorded_at=datetime.now(UTC),
                    payload=json.loads(event.model_dump_json()),
                )
            )
    return time.perf_counter() - started


async def _check_projection(engine: AsyncEngine, requests: int) -> None:
    """Every timed request must have ended up `stored`: the work measured was the real work."""
    async with engine.connect() as conn:
        stored = await conn.scalar(
            select(func.count())
            .select_from(projects)
            .where(projects.c.status == "stored", projects.c.request_id.like("bench-t-%"))
        )
    if stored != requests:
        raise RuntimeError(f"{stored} of {requests} requests projected as stored")


async def _measure_backend(new_database: Callable[[str], str], requests: int) -> dict[str, Any]:
    """Record (+ redeliver) and the plain-insert floor, each in a fresh database of its own."""
    warmup = build_stream(_WARMUP_REQUESTS, "w")
    timed = build_stream(requests, "t")
    n = len(timed)

    engine = await open_engine(new_database("record"))
    try:
        records = Records(engine)
        await _record_all(records, warmup)
        await _redeliver_all(records, warmup)
        record_s = await _record_all(records, timed)
        await _check_projection(engine, requests)
        # Redelivery as Kafka does it: a batch whose offsets were not committed (a crash, a
        # rebalance) is replayed. Timing the replay in the same database gives the duplicate's
        # cost beside the first delivery's, and spares a second full recording pass.
        dup_s = await _redeliver_all(records, timed)
        await _check_projection(engine, requests)
    finally:
        await engine.dispose()

    engine = await open_engine(new_database("plain"), create=False)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_plain_metadata.create_all)
        await _plain_insert_all(engine, warmup)
        plain_s = await _plain_insert_all(engine, timed)
    finally:
        await engine.dispose()

    return {
        "requests": requests,
        "events": n,
        "record_seconds": record_s,
        "record_events_per_s": n / record_s,
        "redelivery_seconds": dup_s,
        "dups_deliveries_per_s": 2 * n / (record_s + dup_s),
        "first_delivery_us": record_s / n * 1e6,
        "duplicate_delivery_us": dup_s / n * 1e6,
        "duplicate_cheaper": dup_s < record_s,
        "plain_seconds": plain_s,
        "plain_events_per_s": n / plain_s,
    }


async def _sqlite(requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-sqlite-") as tmp:

        def new_database(name: str) -> str:
            return f"sqlite:///{Path(tmp) / name}.db"

        result = await _measure_backend(new_database, requests)
        engine = await open_engine(new_database("record"), create=False)
        try:
            async with engine.connect() as conn:
                mode = await conn.scalar(text("PRAGMA journal_mode"))
        finally:
            await engine.dispose()
    result["backend"] = "SQLite (file, WAL)"
    result["server_version"] = sqlite3.sqlite_version
    result["settings"] = f"journal_mode={mode}, synchronous=NORMAL (vidpipe.db defaults)"
    return result


def _postgres(requests: int) -> dict[str, Any]:
    from vidpipe.dev.postgres import LocalPostgres

    pg = LocalPostgres()
    try:
        pg.start()
        admin = f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres"

        def new_database(name: str) -> str:
            database = f"bench_{name}"
            # CREATE DATABASE cannot run in a transaction; called outside the timed loops.
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')
            return f"postgresql://postgres@127.0.0.1:{pg.port}/{database}"

        result = asyncio.run(_measure_backend(new_database, requests))
        with psycopg.connect(admin) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        result["server_version"] = row[0] if row else "?"
    finally:
        # Never leave a server behind, whatever failed above.
        pg.stop()
    result["backend"] = "PostgreSQL (LocalPostgres)"
    result["settings"] = "fsync=off, synchronous_commit=off, full_page_writes=off (LocalPostgres)"
    return result


def run(quick: bool = False) -> BenchResult:
    requests = 50 if quick else 500
    samples = [asyncio.run(_sqlite(requests)), _postgres(requests)]
    rows = [
        [
            s["backend"],
            str(s["events"]),
            f"{s['record_events_per_s']:.0f}",
            f"{s['dups_deliveries_per_s']:.0f}",
            f"{s['plain_events_per_s']:.0f}",
            f"{s['duplicate_delivery_us']:.0f} vs {s['first_delivery_us']:.0f}",
        ]
        for s in samples
    ]
    notes = [
        "one event per transaction, one at a time (as the recorder handles a partition)",
        "with duplicates: deliveries/s over both passes, the whole stream then all of it again",
        "plain insert: the same payloads into a bare table (no unique key, no projection)",
    ]
    notes += [f"{s['backend']} {s['server_version']}: {s['settings']}" for s in samples]
    dearer = [s["backend"] for s in samples if not s["duplicate_cheaper"]]
    if dearer:
        notes.append(f"WARNING: a duplicate cost more than a first delivery on {', '.join(dearer)}")
    return BenchResult(
        name="recorder_throughput",
        title=f"Recorder: Records.record vs plain INSERT ({requests} requests x 7 events)",
        columns=[
            "backend",
            "events",
            "record ev/s",
            "with duplicates ev/s",
            "plain insert ev/s",
            "duplicate vs first µs",
        ],
        rows=rows,
        samples=samples,
        details={"requests": requests, "events_per_request": 7, "warmup_requests": 3},
        notes=notes,
    )


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(run(quick=parser.parse_args().quick).markdown())


if __name__ == "__main__":
    _main()
