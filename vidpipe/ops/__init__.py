"""Operator tools for recovery, one module per operation:

    records.py   rebuild `projects` from the `events` log        `vidpipe replay records`
    redrive.py   re-publish a time window of a topic to itself   `vidpipe replay redrive`
    offsets.py   read, wait for and move a group's offsets       `vidpipe replay reset`
    dlq.py       list the dead letters, send them back           `vidpipe dlq list|redrive`

Each tool is a plain async function taking explicit collaborators (bootstrap servers, topic
names, engines) and returning a result dataclass; `vidpipe.cli.ops` only parses arguments, calls
them and renders. This package module holds what they share: time arguments, topic names, and
reading a fixed window of a topic with a group-less consumer.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from vidpipe.bus.security import KafkaSecurity, client_kwargs
from vidpipe.errors import OpsError, RefusedError

__all__ = [
    "OpsError",
    "ProgressHook",
    "RefusedError",
    "Window",
    "connected",
    "open_reader",
    "parse_time",
    "partitions_of",
    "read_windows",
    "resolve_topic",
    "to_millis",
]

# Called as (done, total) while a tool works; total may grow once while windows are found.
ProgressHook = Callable[[int, int], None]


_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from ISO 8601 (`2026-11-24T10:00:00Z`) or `-15m`/`-2h`/`-1d`/`now`.

    A naive ISO time is taken as UTC: operators read broker timestamps in UTC."""
    value = text.strip()
    current = now or datetime.now(UTC)
    if value == "now":
        return current
    if match := _RELATIVE.match(value):
        amount, unit = float(match.group(1)), match.group(2)
        return current - timedelta(**{_UNITS[unit]: amount})
    try:
        # fromisoformat accepts "Z" from Python 3.11 on.
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise OpsError(
            f"bad time {text!r}: use ISO 8601 (2026-11-24T10:00:00Z) or -15m, -2h, -1d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def to_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def partitions_of(admin: Any, topic: str) -> list[TopicPartition]:
    """The partitions of `topic` (via an started AIOKafkaAdminClient); OpsError if unknown."""
    described: list[dict[str, Any]] = await admin.describe_topics([topic])
    for item in described:
        if item["topic"] == topic and item["error_code"] == 0 and item["partitions"]:
            numbers = sorted(p["partition"] for p in item["partitions"])
            return [TopicPartition(topic, n) for n in numbers]
    raise OpsError(f"no topic {topic!r} on the broker")


async def resolve_topic(admin: Any, name: str, prefix: str) -> str:
    """A full topic name from `name`, which may be full or a suffix like `job.succeeded`."""
    known = set(await admin.list_topics())
    candidates = [name, f"{prefix}{name}"] if name.startswith(prefix) else [f"{prefix}{name}", name]
    for candidate in candidates:
        if candidate in known:
            return candidate
    raise OpsError(f"no topic {name!r} or {prefix}{name!r} on the broker")


@asynccontextmanager
async def connected(
    bootstrap_servers: str, client_id: str, security: KafkaSecurity | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """An admin client (metadata, groups) and a group-less reader, both started.

    `security`: TLS/SASL (None: from the VIDPIPE_KAFKA_* environment, as every ops client).
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id=client_id, **client_kwargs(security)
    )
    await admin.start()
    try:
        reader = open_reader(bootstrap_servers, client_id, security)
        await reader.start()
        try:
            yield admin, reader
        finally:
            await reader.stop()
    finally:
        await admin.close()


def open_reader(
    bootstrap_servers: str, client_id: str, security: KafkaSecurity | None = None
) -> Any:
    """A consumer outside any group: it reads without committing, so no stage is disturbed."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=client_id,
        **client_kwargs(security),
    )


@dataclass(frozen=True)
class Window:
    """Offsets [start, end) of one partition."""

    tp: TopicPartition
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(self.end - self.start, 0)


async def read_windows(
    consumer: Any,
    windows: Iterable[Window],
    *,
    idle_timeout_s: float = 30.0,
) -> AsyncIterator[list[Any]]:
    """Yield batches of records inside `windows`, stopping at each window's end.

    The ends are fixed before reading starts, so messages produced meanwhile (including the
    ones a redrive sends to the same topic) are never read back."""
    pending = {w.tp: w for w in windows if w.size > 0}
    if not pending:
        return
    consumer.assign(list(pending))
    for window in pending.values():
        consumer.seek(window.tp, window.start)
    last_progress = time.monotonic()
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=500, max_records=500)
        records: list[Any] = []
        for tp, found in batch.items():
            if (limit := pending.get(tp)) is not None:
                records.extend(r for r in found if r.offset < limit.end)
        # Position, not the last offset seen: compaction and transaction markers leave gaps.
        for tp in list(pending):
            if await consumer.position(tp) >= pending[tp].end:
                del pending[tp]
                consumer.pause(tp)
        if records:
            last_progress = time.monotonic()
            yield records
        elif time.monotonic() - last_progress > idle_timeout_s:
            left = ", ".join(f"{tp.topic}/{tp.partition}" for tp in pending)
            raise OpsError(f"no progress reading {left} for {idle_timeout_s:.0f} s")
        await asyncio.sleep(0)
