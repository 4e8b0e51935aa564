"""Replay for recovery: rebuild the records, redrive a topic window, move a group's offsets.

- `replay_records`: the `events` log is the truth; `projects` is derived. Re-applying the log in
  `seq` order to an empty database rebuilds `projects` (after a bad migration, a lost database,
  or to check that the live table is what the log says).
- `redrive`: re-publish a time window of a topic to itself, so every stage reading that topic
  sees those messages again. Stages are idempotent by event_id and by storage key, so a redrive
  repeats no provider job, no stored video and no record.
- `reset_offsets`: point a stopped consumer group at a time (or the start / end), so the stage
  re-reads (or skips) from there when it starts again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorError,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from pydantic import ValidationError
from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import EVENT_TYPES
from vidpipe.db.tables import events, projects
from vidpipe.ops import (
    OpsError,
    ProgressHook,
    RefusedError,
    Window,
    connected,
    partitions_of,
    read_windows,
    resolve_topic,
    to_millis,
)

__all__ = [
    "REDRIVEN_HEADER",
    "OffsetChange",
    "PartitionRedrive",
    "RecordsReplay",
    "RedriveResult",
    "ResetResult",
    "committed_offsets",
    "end_offsets",
    "redrive",
    "replay_records",
    "reset_offsets",
    "resolve_group",
    "wait_until_consumed",
]

REDRIVEN_HEADER = "vidpipe-redriven-from"
# How many keys a dry run shows per partition: enough to recognise, not a dump.
_SAMPLE_KEYS = 5


# --- records -------------------------------------------------------------------------------


@dataclass
class RecordsReplay:
    events_read: int = 0
    applied: int = 0
    projects_built: int = 0
    skipped_unknown: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    elapsed_s: float = 0.0

    @property
    def skipped(self) -> int:
        return sum(self.skipped_unknown.values())


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _has_events_table(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: inspect(sync).has_table(events.name))


async def replay_records(
    source: AsyncEngine,
    target: AsyncEngine,
    *,
    batch: int = 500,
    progress: ProgressHook | None = None,
) -> RecordsReplay:
    """Rebuild `projects` on `target` (which must be empty) from `source`'s `events` log.

    `target` must already have its tables (open_engine(create=True)). Each event goes through
    Records.record, the recorder's own code path, so the rebuilt rows are what the recorder
    would have written had it seen the log in this order."""
    from vidpipe.db.records import Records

    if batch < 1:
        raise OpsError("--batch must be at least 1")
    if not await _has_events_table(source):
        raise OpsError("the source database has no `events` table")
    held = {t.name: await _count(target, t) for t in (projects, events)}
    if any(held.values()):
        held_rows = ", ".join(f"{name}: {n} rows" for name, n in held.items() if n)
        raise RefusedError(f"the target database is not empty ({held_rows}); give an empty one")
    started = time.monotonic()
    result = RecordsReplay()
    total = await _count(source, events)
    records = Records(target)
    last_seq = -1
    while True:
        # Keyset pages by seq: stable order, constant memory, no OFFSET scans.
        async with source.connect() as conn:
            rows = (
                await conn.execute(
                    select(events.c.seq, events.c.event_type, events.c.topic, events.c.payload)
                    .where(events.c.seq > last_seq)
                    .order_by(events.c.seq)
                    .limit(batch)
                )
            ).all()
        if not rows:
            break
        for seq, event_type, topic, payload in rows:
            last_seq = seq
            result.events_read += 1
            model = EVENT_TYPES.get(event_type)
            if model is None:
                result.skipped_unknown[event_type] += 1
                continue
            try:
                event = model.model_validate(payload)
            except ValidationError:
                result.invalid += 1
                continue
            if await records.record(event, topic):
                result.applied += 1
        if progress is not None:
            progress(result.events_read, max(total, result.events_read))
    result.projects_built = await _count(target, projects)
    result.elapsed_s = time.monotonic() - started
    return result


# --- redrive -------------------------------------------------------------------------------


@dataclass
class PartitionRedrive:
    partition: int
    start: int
    end: int
    scanned: int = 0
    matched: int = 0
    sent: int = 0
    sample_keys: list[str] = field(default_factory=list)


@dataclass
class RedriveResult:
    topic: str
    since: datetime
    until: datetime | None
    request_id: str | None
    dry_run: bool
    partitions: list[PartitionRedrive]
    elapsed_s: float = 0.0

    @property
    def matched(self) -> int:
        return sum(p.matched for p in self.partitions)

    @property
    def sent(self) -> int:
        return sum(p.sent for p in self.partitions)


async def _windows(
    consumer: Any, tps: Sequence[TopicPartition], since_ms: int, until_ms: int | None
) -> list[Window]:
    """Per partition: the first offset at/after `since` up to the first at/after `until`."""
    ends = await consumer.end_offsets(list(tps))
    starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    stops = (
        await consumer.offsets_for_times(dict.fromkeys(tps, until_ms))
        if until_ms is not None
        else {}
    )
    windows = []
    for tp in tps:
        end = ends[tp]
        # None from offsets_for_times: no message at or after that time, so the window is empty
        # (for the start) or runs to the end captured now (for the stop).
        start = starts[tp].offset if starts.get(tp) is not None else end
        stop = stops[tp].offset if stops.get(tp) is not None else end
        windows.append(Window(tp, start, min(stop, end)))
    return windows


async def redrive(
    bootstrap: str,
    topic: str,
    *,
    prefix: str,
    since: datetime,
    until: datetime | None = None,
    request_id: str | None = None,
    dry_run: bool = False,
    progress: ProgressHook | None = None,
) -> RedriveResult:
    """Re-publish the messages of `topic` stamped in [since, until) to the same partition.

    Key, value and headers are kept; a `vidpipe-redriven-from: topic/partition/offset` header
    says where each copy came from. With `request_id`, only that request's messages (the key)."""
    if until is not None and until <= since:
        raise OpsError("--until must be later than --since")
    started = time.monotonic()
    since_ms, until_ms = to_millis(since), (to_millis(until) if until else None)
    wanted_key = request_id.encode() if request_id else None
    producer: Any = None
    async with AsyncExitStack() as stack:
        admin, consumer = await stack.enter_async_context(
            connected(bootstrap, "vidpipe-ops-redrive")
        )
        topic = await resolve_topic(admin, topic, prefix)
        windows = await _windows(consumer, await partitions_of(admin, topic), since_ms, until_ms)
        stats = {w.tp.partition: PartitionRedrive(w.tp.partition, w.start, w.end) for w in windows}
        total = sum(w.size for w in windows)
        if not dry_run:
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap,
                acks="all",
                enable_idempotence=True,
                client_id="vidpipe-ops-redrive",
            )
            await producer.start()
            stack.push_async_callback(producer.stop)
        done = 0
        if progress is not None:
            progress(0, total)
        async for records in read_windows(consumer, windows):
            sends = []
            for record in records:
                part = stats[record.partition]
                part.scanned += 1
                # CreateTime is set by producers and may run a little out of offset order:
                # the window is by offset, this keeps it exact to the times asked for.
                if record.timestamp < since_ms or (
                    until_ms is not None and record.timestamp >= until_ms
                ):
                    continue
                if wanted_key is not None and record.key != wanted_key:
                    continue
                part.matched += 1
                key_text = record.key.decode("utf-8", "replace") if record.key else "(no key)"
                if len(part.sample_keys) < _SAMPLE_KEYS and key_text not in part.sample_keys:
                    part.sample_keys.append(key_text)
                if producer is None:
                    continue
                headers = [(k, v) for k, v in (record.headers or ()) if k != REDRIVEN_HEADER]
                origin = f"{record.topic}/{record.partition}/{record.offset}"
                headers.append((REDRIVEN_HEADER, origin.encode()))
                # Same partition as the original: the copy stays in order with its request's
                # other messages even if the key is null or the partitioner differs.
                sends.append(
                    (
                        part,
                        await producer.send(
                            topic,
                            value=record.value,
                            key=record.key,
                            partition=record.partition,
                            headers=headers,
                        ),
                    )
                )
            for part, future in sends:
                await future
                part.sent += 1
            done += len(records)
            if progress is not None:
                progress(done, total)
    return RedriveResult(
        topic=topic,
        since=since,
        until=until,
        request_id=request_id,
        dry_run=dry_run,
        partitions=[stats[p] for p in sorted(stats)],
        elapsed_s=time.monotonic() - started,
    )


# --- consumer group offsets ----------------------------------------------------------------

T = TypeVar("T")
# A coordinator that is moving or still loading (e.g. the first group call on a fresh broker,
# while __consumer_offsets is created) answers with these; asking again shortly succeeds.
_COORDINATOR_BUSY = (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
)


async def _ask(call: Callable[[], Awaitable[T]], timeout_s: float = 20.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except _COORDINATOR_BUSY:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.25)


def resolve_group(name: str, *, prefix: str, stages: Sequence[str]) -> str:
    """A stage name means that stage's group (`{prefix}{stage}`); anything else is a group id."""
    return f"{prefix}{name}" if name in stages else name


@dataclass(frozen=True)
class OffsetChange:
    topic: str
    partition: int
    before: int | None
    after: int

    @property
    def delta(self) -> int | None:
        return None if self.before is None else self.after - self.before


@dataclass
class ResetResult:
    group: str
    to: str
    dry_run: bool
    changes: list[OffsetChange]
    state: str


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets (partitions it never committed are absent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="vidpipe-ops")
    await admin.start()
    try:
        offsets = await _ask(lambda: admin.list_consumer_group_offsets(group))
    finally:
        await admin.close()
    return {tp: int(meta.offset) for tp, meta in offsets.items() if meta.offset >= 0}


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The current end offset of every partition of `topics`."""
    async with connected(bootstrap, "vidpipe-ops") as (admin, consumer):
        tps = [tp for topic in topics for tp in await partitions_of(admin, topic)]
        return {tp: int(o) for tp, o in (await consumer.end_offsets(tps)).items()}


async def _describe_group(admin: Any, group: str) -> tuple[str, list[str]]:
    """The group's state and its live members (as client_id@host)."""
    responses = await _ask(lambda: admin.describe_consumer_groups([group]))
    for response in responses:
        for described in response.to_object()["groups"]:
            if described["group"] != group:
                continue
            if described["error_code"]:
                raise OpsError(
                    f"describing group {group!r} failed: error {described['error_code']}"
                )
            members = [f"{m['client_id']}@{m['client_host']}" for m in described["members"]]
            return str(described["state"]), members
    return "Dead", []


async def reset_offsets(
    bootstrap: str,
    group: str,
    *,
    to: Literal["earliest", "latest"] | datetime,
    topics: Sequence[str] = (),
    prefix: str = "",
    dry_run: bool = False,
) -> ResetResult:
    """Commit new offsets for `group` on `topics` (default: the topics it has offsets for).

    Refused (RefusedError) while the group has live members: a running consumer would overwrite
    the reset with its own next commit, and the broker rejects commits from outside a live
    group anyway."""
    async with connected(bootstrap, "vidpipe-ops-reset") as (admin, reader):
        state, members = await _describe_group(admin, group)
        if members or state not in ("Empty", "Dead"):
            who = ", ".join(members) or "none listed"
            raise RefusedError(
                f"group {group!r} is {state} with {len(members)} live member(s) ({who}); "
                "stop its consumers first"
            )
        before = {
            tp: int(meta.offset)
            for tp, meta in (await _ask(lambda: admin.list_consumer_group_offsets(group))).items()
            if meta.offset >= 0
        }
        names = [await resolve_topic(admin, t, prefix) for t in topics] or sorted(
            {tp.topic for tp in before}
        )
        if not names:
            raise OpsError(
                f"group {group!r} has no committed offsets; name the topics with --topic"
            )
        tps = [tp for name in names for tp in await partitions_of(admin, name)]
        ends = await reader.end_offsets(tps)
        if to == "earliest":
            targets = dict(await reader.beginning_offsets(tps))
        elif to == "latest":
            targets = dict(ends)
        else:
            found = await reader.offsets_for_times(dict.fromkeys(tps, to_millis(to)))
            # No message at or after that time: the group starts at the end.
            targets = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        changes = [
            OffsetChange(tp.topic, tp.partition, before.get(tp), int(targets[tp])) for tp in tps
        ]
        if not dry_run:
            await _commit(bootstrap, group, {tp: int(targets[tp]) for tp in tps})
    label = to if isinstance(to, str) else to.isoformat(timespec="seconds")
    return ResetResult(group=group, to=label, dry_run=dry_run, changes=changes, state=state)


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    # A consumer that assigns partitions itself never joins the group: it commits with the
    # "no generation" marker, which the broker accepts only while the group has no members.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        client_id="vidpipe-ops-reset",
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(
            {tp: OffsetAndMetadata(o, "vidpipe reset") for tp, o in offsets.items()}
        )
    except KafkaError as exc:
        raise RefusedError(
            f"the broker refused the new offsets for {group!r} ({exc.__class__.__name__}); "
            "did a consumer of the group start meanwhile?"
        ) from None
    finally:
        await consumer.stop()


async def wait_until_consumed(
    bootstrap: str, group: str, targets: dict[TopicPartition, int], timeout_s: float = 60.0
) -> None:
    """Wait until `group` has committed at least `targets` (e.g. end offsets after a redrive)."""
    deadline = time.monotonic() + timeout_s
    committed: dict[TopicPartition, int] = {}
    while time.monotonic() < deadline:
        committed = await committed_offsets(bootstrap, group)
        # An empty partition (end 0) has nothing to commit, so a missing offset counts as 0.
        if all(committed.get(tp, 0) >= end for tp, end in targets.items()):
            return
        await asyncio.sleep(0.2)
    behind = {
        f"{tp.topic}/{tp.partition}": (committed.get(tp), end)
        for tp, end in targets.items()
        if committed.get(tp, 0) < end
    }
    raise TimeoutError(f"group {group!r} still behind after {timeout_s} s: {behind}")
