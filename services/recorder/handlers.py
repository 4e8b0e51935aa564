"""Recorder: writes every event to the `events` log and projects it onto the `projects` table.

Reads:   {prefix}generation.requested, {prefix}job.submitted, {prefix}job.progressed,
         {prefix}job.succeeded, {prefix}job.failed, {prefix}download.unavailable,
         {prefix}video.stored (and the fallbacks' events), as consumer batches
Writes:  nothing on Kafka but dead letters; the database (SQLite by default, PostgreSQL by URL).

A batch is recorded in one transaction (`Records.record_many`): one commit and one offset commit
for up to `records_batch_max` events, instead of one of each per event. Idempotent by event_id:
a redelivered or replayed event is logged once and changes nothing. The projection (which event
moves which column) is `vidpipe.policy.projection.project`, a pure function.

Failures stay per record: a record that cannot be read is dead-lettered and the rest of its batch
recorded; the database being away fails the batch, which comes again whole; an event the
database refuses for its own reasons is tried alone, then dead-lettered after its attempts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from schemas.events import Event, VideoStored
from vidpipe.bus.batches import read_record
from vidpipe.bus.deadletter import Failure, FailureHandling, classify, describe_poison
from vidpipe.db.records import Records
from vidpipe.metrics import current as current_metrics

__all__ = ["RecorderDeps", "handle_batch", "handle_event", "read_event"]

log = structlog.get_logger("vidpipe.recorder")


@dataclass
class RecorderDeps:
    records: Records
    failures: FailureHandling
    #: Each topic carries one event type, so the topic (not a field the producer may have left
    #: out) decides the model: a bare upstream request without `event_type` is still recorded.
    model_for_topic: Mapping[str, type[Event]]


def read_event(record: Any, model_for_topic: Mapping[str, type[Event]]) -> Event:
    """The event a consumer record holds, read as every other stage reads it (its topic names
    its type); `PoisonMessage` (or a `ValidationError`) when none."""
    return read_record(record, model_for_topic[record.topic])


async def handle_event(event: Event, topic: str, records: Records) -> bool:
    """Record one event; False when it had been recorded before."""
    fresh = await records.record(event, topic)
    if fresh:
        log.info("recorded", request_id=event.request_id, event_type=event.event_type)
    else:
        log.debug("duplicate_event", request_id=event.request_id, event_id=str(event.event_id))
    return fresh


async def handle_batch(batch: Sequence[Any], deps: RecorderDeps) -> int:
    """Record a consumer batch; how many events were new."""
    readable: list[tuple[Any, Event]] = []
    unreadable: list[tuple[Any, BaseException]] = []
    for record in batch:
        try:
            readable.append((record, read_event(record, deps.model_for_topic)))
        except Exception as exc:
            unreadable.append((record, exc))
    try:
        fresh = await deps.records.record_many([(event, r.topic) for r, event in readable])
    except Exception as exc:
        if classify(exc) is Failure.WORLD:
            raise  # the whole batch comes again once the database answers
        fresh = [await _record_alone(record, event, deps) for record, event in readable]
    await _observe_latency([e for (_r, e), new in zip(readable, fresh, strict=True) if new], deps)
    # Letters go out after the batch is committed: a batch the database failed is delivered
    # again, and its letters would be sent twice.
    for record, problem in unreadable:
        reason = describe_poison(problem) or f"refused: {problem}"
        await deps.failures.dead_letter(record, reason, problem, attempts=1, poison=True)
    recorded = sum(fresh)
    log.info("recorded_batch", events=len(batch), new=recorded, dead_lettered=len(unreadable))
    return recorded


async def _observe_latency(recorded: Sequence[Event], deps: RecorderDeps) -> None:
    """`vidpipe_end_to_end_seconds` for each video newly recorded as stored (its first variant:
    one observation per request and kind), from its request's GenerationRequested."""
    stored = [e for e in recorded if isinstance(e, VideoStored) and e.variant_index == 0]
    if not stored:
        return
    try:
        asked = await deps.records.requested_at([e.request_id for e in stored])
    except Exception as exc:  # a metric never fails a batch already committed
        log.debug("latency_lookup_failed", error=type(exc).__name__)
        return
    for event in stored:
        if event.request_id in asked:
            seconds = (event.occurred_at - asked[event.request_id]).total_seconds()
            current_metrics().stored_after(
                event.provider, placeholder=event.placeholder, seconds=seconds
            )


async def _record_alone(record: Any, event: Event, deps: RecorderDeps) -> bool:
    """One event the batch could not take, on its own, with the stage's bounded attempts."""
    backoff = deps.failures.backoff
    while True:
        try:
            fresh = await deps.records.record(event, record.topic)
        except Exception as exc:
            kind = classify(exc)
            if kind is Failure.WORLD:
                raise
            attempts = backoff.count(record, own=True)
            if attempts < backoff.max_attempts:
                await backoff.wait(record, exc, kind)
                continue
            reason = f"gave up after {attempts} attempts: {type(exc).__name__}: {exc}"
            await deps.failures.dead_letter(record, reason, exc, attempts, poison=False)
            backoff.succeeded(record)
            return False
        backoff.succeeded(record)
        return fresh
