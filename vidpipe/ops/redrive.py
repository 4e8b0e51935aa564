"""Redrive a topic: re-publish a time window of it to itself, so every stage reading it sees the
messages again.

Stages are idempotent by event id and by storage key, so a redrive repeats no provider job, no
stored video and no record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from vidpipe.bus.security import client_kwargs
from vidpipe.ops import (
    OpsError,
    ProgressHook,
    Window,
    connected,
    partitions_of,
    read_windows,
    resolve_topic,
    to_millis,
)

__all__ = ["REDRIVEN_HEADER", "PartitionRedrive", "RedriveResult", "redrive"]

REDRIVEN_HEADER = "vidpipe-redriven-from"
# How many keys a dry run shows per partition: enough to recognise, not a dump.
_SAMPLE_KEYS = 5


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
    bootstrap_servers: str,
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
            connected(bootstrap_servers, "vidpipe-ops-redrive")
        )
        topic = await resolve_topic(admin, topic, prefix)
        windows = await _windows(consumer, await partitions_of(admin, topic), since_ms, until_ms)
        stats = {w.tp.partition: PartitionRedrive(w.tp.partition, w.start, w.end) for w in windows}
        total = sum(w.size for w in windows)
        if not dry_run:
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap_servers,
                acks="all",
                enable_idempotence=True,
                client_id="vidpipe-ops-redrive",
                **client_kwargs(None),
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
