"""Replay for recovery on the real broker and databases: records, redrive, group reset."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from schemas.events import (
    DownloadGaveUp,
    DownloadRetryScheduled,
    DownloadUnavailable,
    Event,
    GenerationRequested,
    JobFailed,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    UserNotified,
    VideoStored,
    derive_event_id,
)
from schemas.topics import Topics
from vidpipe.bus.admin import ensure_topics
from vidpipe.cli import app
from vidpipe.db.records import Records
from vidpipe.db.tables import events, open_engine, projects
from vidpipe.ops import OpsError, RefusedError, parse_time
from vidpipe.ops.offsets import committed_offsets, end_offsets, reset_offsets, resolve_group
from vidpipe.ops.records import replay_records
from vidpipe.ops.redrive import REDRIVEN_HEADER, redrive

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]

# --- records -------------------------------------------------------------------------------

_IGNORED_COLUMNS = {"id", "created_at", "updated_at"}


def _normal(value: Any) -> Any:
    # SQLite hands back naive datetimes (stored as UTC), PostgreSQL aware ones: compare in UTC.
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    return value


async def project_rows(engine: AsyncEngine, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every `projects` row whose request id starts with `prefix`, minus id and timestamps."""
    async with engine.connect() as conn:
        rows = (
            (await conn.execute(select(projects).where(projects.c.request_id.startswith(prefix))))
            .mappings()
            .all()
        )
    return {
        row["request_id"]: {k: _normal(v) for k, v in row.items() if k not in _IGNORED_COLUMNS}
        for row in rows
    }


def _mixed_run(prefix: str) -> list[tuple[Event, str]]:
    """Events of several requests, as the recorder would see them, with their topics."""
    topics = Topics(prefix)
    at = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    out: list[tuple[Event, str]] = []

    def add(event: Event) -> None:
        out.append((event, topics.for_event(type(event))))

    def requested(rid: str, **fields: Any) -> None:
        add(GenerationRequested.model_validate({"request_id": rid, "prompt": f"p {rid}", **fields}))

    def submitted(rid: str, job: str) -> None:
        add(
            JobSubmitted(
                event_id=derive_event_id(rid, "JobSubmitted"),
                request_id=rid,
                provider="azure-sora",
                provider_job_id=job,
                endpoint_host="emu.example",
                model="sora",
                expires_at=at + timedelta(hours=24),
            )
        )

    def succeeded(rid: str, job: str, gen: str) -> None:
        add(
            JobSucceeded(
                event_id=derive_event_id(rid, "JobSucceeded"),
                request_id=rid,
                provider="azure-sora",
                provider_job_id=job,
                generation_ids=[gen],
                expires_at=at + timedelta(hours=24),
            )
        )

    def stored(rid: str, gen: str, *, placeholder: bool = False) -> None:
        add(
            VideoStored(
                event_id=derive_event_id(rid, "VideoStored", gen, placeholder),
                request_id=rid,
                provider="azure-sora",
                provider_job_id=f"job-{rid}",
                generation_id=gen,
                storage_url=f"file:///videos/{rid}/{gen}{'-p' if placeholder else ''}.mp4",
                size_bytes=1234,
                sha256="ab" * 32,
                placeholder=placeholder,
            )
        )

    def unavailable(rid: str, gen: str) -> None:
        add(
            DownloadUnavailable(
                event_id=derive_event_id(rid, "DownloadUnavailable", gen),
                request_id=rid,
                provider="azure-sora",
                provider_job_id=f"job-{rid}",
                generation_id=gen,
                reason_code="not_found",
                http_status=404,
                message="content not found",
                attempted_at=at + timedelta(minutes=1),
            )
        )

    ok, failed, retrying, placeholder, parent = (
        f"{prefix}ok",
        f"{prefix}failed",
        f"{prefix}retrying",
        f"{prefix}placeholder",
        f"{prefix}parent",
    )
    child = f"{parent}.failover"
    requested(ok, metadata={"lang": "fr"}, input_image_url="https://img.example/a.png")
    requested(failed, provider="openai-videos")
    submitted(ok, f"job-{ok}")
    add(
        JobProgressed(
            event_id=derive_event_id(ok, "JobProgressed", 1),
            request_id=ok,
            provider="azure-sora",
            provider_job_id=f"job-{ok}",
            status="running",
            provider_status="running",
            progress=40,
        )
    )
    add(
        JobFailed(
            event_id=derive_event_id(failed, "JobFailed"),
            request_id=failed,
            provider="openai-videos",
            stage="poll",
            reason_code="output_moderation",
            message="the output was blocked",
        )
    )
    succeeded(ok, f"job-{ok}", f"gen-{ok}")
    stored(ok, f"gen-{ok}")
    for rid in (retrying, placeholder, parent):
        requested(rid)
        submitted(rid, f"job-{rid}")
        succeeded(rid, f"job-{rid}", f"gen-{rid}")
        unavailable(rid, f"gen-{rid}")
    add(
        DownloadRetryScheduled(
            event_id=derive_event_id(retrying, "DownloadRetryScheduled", 1),
            request_id=retrying,
            provider="azure-sora",
            provider_job_id=f"job-{retrying}",
            generation_id=f"gen-{retrying}",
            attempt=1,
            next_attempt_at=at + timedelta(minutes=5),
            last_reason_code="not_found",
            attempted_at=at + timedelta(minutes=2),
        )
    )
    add(
        UserNotified(
            event_id=derive_event_id(retrying, "UserNotified", "record"),
            request_id=retrying,
            channel="record",
            language="fr",
            message="Votre vidéo arrive bientôt.",
            delivered=True,
        )
    )
    stored(placeholder, f"gen-{placeholder}", placeholder=True)
    add(
        DownloadGaveUp(
            event_id=derive_event_id(parent, "DownloadGaveUp"),
            request_id=parent,
            provider="azure-sora",
            provider_job_id=f"job-{parent}",
            generation_id=f"gen-{parent}",
            reason_code="expired",
            attempts=3,
            message="the asset expired",
        )
    )
    requested(child, parent_request_id=parent, provider="openai-videos")
    submitted(child, f"job-{child}")
    succeeded(child, f"job-{child}", f"gen-{child}")
    stored(child, f"gen-{child}")
    return out


@dataclass
class Source:
    engine: AsyncEngine
    prefix: str
    whole_table: bool  # False on the session's shared PostgreSQL: compare this test's rows only


@pytest.fixture(params=["sqlite", "postgres"])
async def source(
    request: pytest.FixtureRequest, tmp_path: Path, unique_prefix: str
) -> AsyncIterator[Source]:
    if request.param == "sqlite":
        engine = await open_engine(f"sqlite:///{tmp_path / 'source.db'}")
    else:
        engine = await open_engine(request.getfixturevalue("postgres_url"))
    records = Records(engine)
    for event, topic in _mixed_run(unique_prefix):
        assert await records.record(event, topic)
    # An event type from a newer version this code does not know: replay skips it.
    async with engine.begin() as conn:
        await conn.execute(
            insert(events).values(
                event_id=str(uuid.uuid4()),
                request_id=f"{unique_prefix}ok",
                event_type="FromTheFuture",
                topic=f"{unique_prefix}future",
                occurred_at=datetime.now(UTC),
                recorded_at=datetime.now(UTC),
                payload={"event_type": "FromTheFuture"},
            )
        )
    try:
        yield Source(engine, unique_prefix, whole_table=request.param == "sqlite")
    finally:
        await engine.dispose()


async def test_replayed_records_equal_the_source_projects(source: Source, tmp_path: Path) -> None:
    target = await open_engine(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    try:
        seen: list[tuple[int, int]] = []
        result = await replay_records(
            source.engine, target, batch=7, progress=lambda d, t: seen.append((d, t))
        )
        prefix = "" if source.whole_table else source.prefix
        expected = await project_rows(source.engine, prefix)
        rebuilt = await project_rows(target, prefix)
    finally:
        await target.dispose()
    assert len(expected) == 6
    assert rebuilt == expected
    statuses = {rid.removeprefix(source.prefix): row["status"] for rid, row in expected.items()}
    assert statuses == {
        "ok": "stored",
        "failed": "failed",
        "retrying": "retrying",
        "placeholder": "placeholder",
        "parent": "stored",  # linked to its failover child's video
        "parent.failover": "stored",
    }
    assert seen and seen[-1][0] == result.events_read
    if source.whole_table:
        logged = len(_mixed_run(source.prefix))
        assert result.events_read == logged + 1
        assert result.applied == logged
        assert result.projects_built == 6
        assert dict(result.skipped_unknown) == {"FromTheFuture": 1}
    else:
        assert result.skipped_unknown["FromTheFuture"] >= 1
        assert result.projects_built >= 6
    assert result.invalid == 0


async def test_records_replay_refuses_a_target_that_holds_rows(tmp_path: Path) -> None:
    source = await open_engine(f"sqlite:///{tmp_path / 'source.db'}")
    target = await open_engine(f"sqlite:///{tmp_path / 'target.db'}")
    try:
        for event, topic in _mixed_run("x.")[:2]:
            await Records(source).record(event, topic)
            await Records(target).record(event, topic)
        with pytest.raises(RefusedError, match=r"not empty \(projects: 2 rows, events: 2 rows\)"):
            await replay_records(source, target)
    finally:
        await source.dispose()
        await target.dispose()


def test_records_cli_rebuilds_and_refuses_a_second_time(tmp_path: Path) -> None:
    async def fill() -> None:
        engine = await open_engine(f"sqlite:///{tmp_path / 'live.db'}")
        for event, topic in _mixed_run("cli."):
            await Records(engine).record(event, topic)
        await engine.dispose()

    asyncio.run(fill())
    env = {"VIDPIPE_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}"}
    target = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    result = runner.invoke(app, ["replay", "records", "--target-url", target], env=env)
    assert result.exit_code == 0, result.output
    logged = len(_mixed_run("cli."))
    assert re.search(rf"events applied\W+{logged}\b", result.stdout), result.stdout
    assert re.search(r"projects built\W+6\b", result.stdout), result.stdout
    again = runner.invoke(app, ["replay", "records", "--target-url", target], env=env)
    assert again.exit_code == 1
    assert "not empty" in again.stderr and len(again.stderr.strip().splitlines()) == 1


# --- redrive -------------------------------------------------------------------------------

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
KEYS = ("req-a", "req-b", "req-c")


def _at(seconds: int) -> datetime:
    return BASE + timedelta(seconds=seconds)


async def _fill(bootstrap_servers: str, topic: str, count: int = 12, partitions: int = 2) -> None:
    """`count` messages, one every 10 s of explicit CreateTime from BASE, keys cycling."""
    await ensure_topics(bootstrap_servers, [topic], partitions=partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(
                topic,
                value=json.dumps({"n": i}).encode(),
                key=KEYS[i % len(KEYS)].encode(),
                timestamp_ms=int(_at(10 * i).timestamp() * 1000),
                headers=[("content-type", b"application/json")],
            )
    finally:
        await producer.stop()


async def _read_all(bootstrap_servers: str, topic: str) -> list[Any]:
    """Every record of `topic` up to its current end."""
    ends = await end_offsets(bootstrap_servers, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + 30
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            assert time.monotonic() < deadline, "topic not read in time"
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(
                    r for r in records if r.offset < ends[TopicPartition(r.topic, r.partition)]
                )
    finally:
        await consumer.stop()
    return out


async def test_redrive_dry_run_sends_nothing_and_a_real_one_copies_the_window(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}job.succeeded"
    await _fill(kafka_bootstrap, topic)
    before = await end_offsets(kafka_bootstrap, [topic])
    # Messages 3..8 (30 s..80 s): since is inclusive, until exclusive.
    since, until = _at(25), _at(90)

    dry = await redrive(
        kafka_bootstrap,
        "job.succeeded",
        prefix=unique_prefix,
        since=since,
        until=until,
        dry_run=True,
    )
    assert dry.topic == topic
    assert (dry.matched, dry.sent) == (6, 0)
    assert sorted(k for p in dry.partitions for k in p.sample_keys) == sorted(set(KEYS))
    assert await end_offsets(kafka_bootstrap, [topic]) == before

    real = await redrive(kafka_bootstrap, topic, prefix=unique_prefix, since=since, until=until)
    assert (real.matched, real.sent) == (6, 6)
    assert [p.sent for p in real.partitions] == [p.matched for p in dry.partitions]
    after = await end_offsets(kafka_bootstrap, [topic])
    assert sum(after.values()) - sum(before.values()) == 6

    records = await _read_all(kafka_bootstrap, topic)
    originals = {
        (r.partition, r.offset): r
        for r in records
        if r.offset < before[TopicPartition(topic, r.partition)]
    }
    copies = [r for r in records if r.offset >= before[TopicPartition(topic, r.partition)]]
    assert len(copies) == 6
    for copy in copies:
        headers = dict(copy.headers)
        origin_topic, partition, offset = headers[REDRIVEN_HEADER].decode().rsplit("/", 2)
        original = originals[(int(partition), int(offset))]
        assert origin_topic == topic and copy.partition == original.partition
        assert (copy.key, copy.value) == (original.key, original.value)
        assert headers["content-type"] == b"application/json"
        assert 30 <= json.loads(copy.value)["n"] * 10 < 90


async def test_redrive_of_one_request_sends_only_its_messages(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}job.succeeded"
    await _fill(kafka_bootstrap, topic)
    before = await end_offsets(kafka_bootstrap, [topic])
    result = await redrive(
        kafka_bootstrap, topic, prefix=unique_prefix, since=_at(0), request_id="req-b"
    )
    assert (result.matched, result.sent) == (4, 4)  # messages 1, 4, 7, 10
    copies = [
        r
        for r in await _read_all(kafka_bootstrap, topic)
        if r.offset >= before[TopicPartition(topic, r.partition)]
    ]
    assert sorted(json.loads(r.value)["n"] for r in copies) == [1, 4, 7, 10]
    assert {r.key for r in copies} == {b"req-b"}


async def test_redrive_refuses_unknown_topics_and_backwards_windows(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    with pytest.raises(OpsError, match="no topic"):
        await redrive(kafka_bootstrap, "nope", prefix=unique_prefix, since=_at(0))
    with pytest.raises(OpsError, match="later than"):
        await redrive(kafka_bootstrap, "nope", prefix=unique_prefix, since=_at(10), until=_at(0))


def test_redrive_cli_dry_run_lists_counts_and_keys(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    asyncio.run(_fill(kafka_bootstrap, f"{unique_prefix}job.succeeded"))
    env = {"VIDPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap, "VIDPIPE_TOPIC_PREFIX": unique_prefix}
    args = ["replay", "redrive", "--topic", "job.succeeded", "--since", "-2h", "--dry-run"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "dry run: 12 matched, 12 would send" in result.stdout
    assert "req-a" in result.stdout
    bad = runner.invoke(app, [*args[:5], "yesterday"], env=env)
    assert bad.exit_code == 2 and "--since: bad time 'yesterday'" in bad.stderr


# --- reset ---------------------------------------------------------------------------------


async def _consume(
    bootstrap_servers: str, group: str, topic: str, want: int, timeout_s: float = 30
) -> list[int]:
    """Join `group`, read until `want` messages (or the timeout), commit, leave; the `n`s read."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen: list[int] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(seen) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen.extend(json.loads(r.value)["n"] for r in records)
        await consumer.commit()
    finally:
        await consumer.stop()
    return sorted(seen)


async def _reset_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """The real `vidpipe replay reset` as a subprocess (this test's loop keeps a consumer live)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vidpipe",
        "replay",
        "reset",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_reset_is_refused_while_the_group_is_live_then_replays_everything(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    topic = f"{unique_prefix}job.succeeded"
    group = resolve_group("fetcher", prefix=unique_prefix, stages=("fetcher",))
    assert group == f"{unique_prefix}fetcher"
    await _fill(kafka_bootstrap, topic)
    assert await _consume(kafka_bootstrap, group, topic, 12) == list(range(12))

    live = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await live.start()
    try:
        while not live.assignment():  # joined: the group has a member
            await live.getmany(timeout_ms=100)
        with pytest.raises(RefusedError, match="live member"):
            await reset_offsets(kafka_bootstrap, group, to="earliest")
        env = {"VIDPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap, "VIDPIPE_TOPIC_PREFIX": unique_prefix}
        code, _out, err = await _reset_cli(env, "--group", "fetcher", "--to", "earliest")
        assert code == 1, err
        assert "live member" in err and len(err.strip().splitlines()) == 1
    finally:
        await live.stop()

    committed = await committed_offsets(kafka_bootstrap, group)
    dry = await reset_offsets(kafka_bootstrap, group, to="earliest", dry_run=True)
    assert await committed_offsets(kafka_bootstrap, group) == committed
    assert {c.after for c in dry.changes} == {0}
    assert sum(c.before or 0 for c in dry.changes) == 12

    result = await reset_offsets(kafka_bootstrap, group, to="earliest")
    assert [(c.topic, c.partition, c.after) for c in result.changes] == [
        (topic, 0, 0),
        (topic, 1, 0),
    ]
    assert sum(c.before or 0 for c in result.changes) == 12
    assert set((await committed_offsets(kafka_bootstrap, group)).values()) == {0}
    # A new consumer of the group starts from the reset offsets: everything again.
    assert await _consume(kafka_bootstrap, group, topic, 12) == list(range(12))


async def test_reset_to_a_time_and_past_the_end(kafka_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}job.succeeded"
    group = f"{unique_prefix}timed"
    await _fill(kafka_bootstrap, topic)
    # A group that never committed: name its topic.
    with pytest.raises(OpsError, match="no committed offsets"):
        await reset_offsets(kafka_bootstrap, group, to="earliest")
    result = await reset_offsets(
        kafka_bootstrap, group, to=_at(75), topics=["job.succeeded"], prefix=unique_prefix
    )
    assert all(c.before is None for c in result.changes)
    assert await _consume(kafka_bootstrap, group, topic, 4) == [8, 9, 10, 11]

    ends = await end_offsets(kafka_bootstrap, [topic])
    future = await reset_offsets(kafka_bootstrap, group, to=parse_time("now") + timedelta(days=1))
    assert {TopicPartition(c.topic, c.partition): c.after for c in future.changes} == ends
    assert await committed_offsets(kafka_bootstrap, group) == ends


def test_time_arguments() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_time("-15m", now=now) == now - timedelta(minutes=15)
    assert parse_time("-2h", now=now) == now - timedelta(hours=2)
    assert parse_time("-1d", now=now) == now - timedelta(days=1)
    assert parse_time("2026-11-24T10:00:00Z") == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert parse_time("2026-11-24T11:00:00+01:00") == datetime(2026, 11, 24, 10, tzinfo=UTC)
    for bad in ("15m", "-2x", "tomorrow", ""):
        with pytest.raises(OpsError):
            parse_time(bad)
