"""The dead-letter topic: list what is in it, and send letters back where they came from.

A dead letter keeps the original topic/partition/offset/key/value and the reason (see
vidpipe.bus.deadletter). Once the cause is fixed (a schema relaxed, a bug in a stage deployed
away), `redrive_dead_letters` re-publishes the original bytes with the original key to the
original topic. A message that is still poison is simply dead-lettered again.

Letters keep UTF-8 values as text and other bytes as base64, both redriven byte-exact; a letter
whose value was cut to fit the broker (`original_value_truncated`) no longer holds the message,
so its redrive is refused, with the reason, and the others still go.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from schemas.events import DeadLetter
from vidpipe.bus.security import client_kwargs
from vidpipe.bus.tracing import carried_trace
from vidpipe.ops import ProgressHook, Window, connected, partitions_of, read_windows

__all__ = [
    "DLQ_REDRIVEN_HEADER",
    "DeadLetterEntry",
    "DlqListing",
    "DlqRedrive",
    "TopicRedrive",
    "list_dead_letters",
    "original_bytes",
    "read_dead_letters",
    "redrive_dead_letters",
    "refusal",
]

DLQ_REDRIVEN_HEADER = "vidpipe-redriven-from-dlq"


@dataclass(frozen=True)
class DeadLetterEntry:
    """One record of the dead-letter topic: the parsed letter, or why it could not be parsed."""

    partition: int
    offset: int
    timestamp_ms: int
    letter: DeadLetter | None
    problem: str | None = None
    #: The letter record's trace headers: a redriven message continues the original's trace.
    trace: tuple[tuple[str, bytes], ...] = ()

    @property
    def when(self) -> datetime:
        if self.letter is not None:
            return self.letter.dead_lettered_at
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def matches(self, reason: str | None, stage: str | None) -> bool:
        if self.letter is None:
            return False
        if reason is not None and reason.lower() not in self.letter.reason.lower():
            return False
        return stage is None or self.letter.stage == stage

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"dlq_partition": self.partition, "dlq_offset": self.offset}
        if self.letter is not None:
            body.update(self.letter.model_dump(mode="json"))
        else:
            body["problem"] = self.problem
        return body


async def read_dead_letters(
    bootstrap_servers: str, topic: str, *, progress: ProgressHook | None = None
) -> list[DeadLetterEntry]:
    """Every record of the dead-letter topic up to its end as of now, in (partition, offset)."""
    entries: list[DeadLetterEntry] = []
    async with connected(bootstrap_servers, "vidpipe-ops-dlq") as (admin, consumer):
        tps = await partitions_of(admin, topic)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        windows = [Window(tp, starts[tp], ends[tp]) for tp in tps]
        total = sum(w.size for w in windows)
        if progress is not None:
            progress(0, total)
        async for records in read_windows(consumer, windows):
            entries.extend(_entry(record) for record in records)
            if progress is not None:
                progress(len(entries), total)
    entries.sort(key=lambda e: (e.partition, e.offset))
    return entries


def _entry(record: Any) -> DeadLetterEntry:
    try:
        letter = DeadLetter.model_validate_json(record.value or b"")
    except ValidationError as exc:
        return DeadLetterEntry(
            record.partition, record.offset, record.timestamp, None, f"not a DeadLetter: {exc}"
        )
    return DeadLetterEntry(
        record.partition, record.offset, record.timestamp, letter, trace=carried_trace(record)
    )


@dataclass
class DlqListing:
    entries: list[DeadLetterEntry]
    scanned: int
    matched: int
    unreadable: int


async def list_dead_letters(
    bootstrap_servers: str,
    topic: str,
    *,
    reason: str | None = None,
    stage: str | None = None,
    limit: int | None = None,
    progress: ProgressHook | None = None,
) -> DlqListing:
    """The matching letters, oldest first; with `limit`, only the most recent `limit`."""
    entries = await read_dead_letters(bootstrap_servers, topic, progress=progress)
    matching = sorted((e for e in entries if e.matches(reason, stage)), key=lambda e: e.when)
    shown = matching[-limit:] if limit else matching
    return DlqListing(
        entries=shown,
        scanned=len(entries),
        matched=len(matching),
        unreadable=sum(1 for e in entries if e.letter is None),
    )


def original_bytes(letter: DeadLetter) -> bytes | None:
    """The dead-lettered message's bytes exactly as they were, or None when the letter was cut."""
    if letter.original_value_truncated:
        return None
    if letter.original_value_encoding == "base64":
        return base64.b64decode(letter.original_value)
    # UTF-8 text (letters before base64 escaped invalid bytes): byte-exact for valid UTF-8.
    return letter.original_value.encode("utf-8")


def refusal(letter: DeadLetter) -> str | None:
    """Why this letter cannot be redriven, or None."""
    if not letter.original_value_truncated:
        return None
    return (
        f"{letter.original_topic} {letter.original_partition}/{letter.original_offset}: the value "
        f"was cut to fit the broker ({letter.original_size} bytes, sha256 "
        f"{letter.original_sha256}); the letter no longer holds the message, so it is not sent"
    )


@dataclass
class TopicRedrive:
    matched: int = 0
    sent: int = 0


@dataclass
class DlqRedrive:
    dry_run: bool
    scanned: int = 0
    matched: int = 0
    sent: int = 0
    # Several stages may dead-letter the same message (the recorder reads every topic): it is
    # sent back once.
    duplicates: int = 0
    unreadable: int = 0
    missing_topics: Counter[str] = field(default_factory=Counter)
    #: Letters that cannot be sent back (a value cut to fit the broker), each with its reason.
    refused: list[str] = field(default_factory=list)
    topics: dict[str, TopicRedrive] = field(default_factory=dict)
    elapsed_s: float = 0.0


def _select(entries: Iterable[DeadLetterEntry], result: DlqRedrive) -> list[DeadLetterEntry]:
    """The first letter of each original message, in the order the letters were written."""
    chosen: list[DeadLetterEntry] = []
    seen: set[tuple[str, int, int]] = set()
    for entry in sorted(entries, key=lambda e: e.when):
        assert entry.letter is not None
        letter = entry.letter
        origin = (letter.original_topic, letter.original_partition, letter.original_offset)
        if origin in seen:
            result.duplicates += 1
            continue
        seen.add(origin)
        chosen.append(entry)
    return chosen


async def redrive_dead_letters(
    bootstrap_servers: str,
    topic: str,
    *,
    reason: str | None = None,
    stage: str | None = None,
    dry_run: bool = False,
    progress: ProgressHook | None = None,
) -> DlqRedrive:
    """Send matching letters' original value and key back to their original topic."""
    started = time.monotonic()
    result = DlqRedrive(dry_run=dry_run)
    entries = await read_dead_letters(bootstrap_servers, topic)
    result.scanned = len(entries)
    result.unreadable = sum(1 for e in entries if e.letter is None)
    matching = [e for e in entries if e.matches(reason, stage)]
    result.matched = len(matching)
    chosen = _select(matching, result)
    # Never let a redrive create a topic by auto-creation: a letter naming a topic that is gone
    # is reported, not sent.
    async with connected(bootstrap_servers, "vidpipe-ops-dlq") as (admin, _reader):
        known = set(await admin.list_topics())
    producer: Any = None
    if not dry_run:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            client_id="vidpipe-ops-dlq",
            **client_kwargs(None),
        )
        await producer.start()
    pending: list[tuple[TopicRedrive, Any]] = []
    try:
        for entry in chosen:
            letter = entry.letter
            assert letter is not None
            per_topic = result.topics.setdefault(letter.original_topic, TopicRedrive())
            per_topic.matched += 1
            value = original_bytes(letter)
            if value is None:
                result.refused.append(refusal(letter) or "truncated")
            elif letter.original_topic not in known:
                result.missing_topics[letter.original_topic] += 1
            elif producer is not None:
                key = letter.original_key
                future = await producer.send(
                    letter.original_topic,
                    value=value,
                    key=key.encode("utf-8") if key is not None else None,
                    headers=[
                        (DLQ_REDRIVEN_HEADER, f"{entry.partition}/{entry.offset}".encode()),
                        *entry.trace,
                    ],
                )
                pending.append((per_topic, future))
        if progress is not None:
            progress(0, len(pending))
        # Sends are pipelined; each counts once the broker has acknowledged it.
        for done, (per_topic, future) in enumerate(pending, start=1):
            await future
            per_topic.sent += 1
            result.sent += 1
            if progress is not None:
                progress(done, len(pending))
    finally:
        if producer is not None:
            await producer.stop()
    result.elapsed_s = time.monotonic() - started
    return result
