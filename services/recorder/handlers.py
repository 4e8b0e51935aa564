"""Recorder: writes every event to the `events` log and projects it onto the `projects` table.

Reads:   {prefix}generation.requested, {prefix}job.submitted, {prefix}job.progressed,
         {prefix}job.succeeded, {prefix}job.failed, {prefix}download.unavailable,
         {prefix}video.stored
Writes:  nothing on Kafka; the database (SQLite by default, PostgreSQL/Supabase by URL).

Idempotent by event_id: a redelivered or replayed event is logged once and changes nothing.
The projection itself (which event moves which column) is `vidpipe.policy.projection.project`,
a pure function; `vidpipe.db.records` is the SQL around it.
"""

from __future__ import annotations

import structlog

from schemas.events import Event
from vidpipe.db.records import Records

__all__ = ["handle_event"]

log = structlog.get_logger("vidpipe.recorder")


async def handle_event(event: Event, topic: str, records: Records) -> bool:
    """Record one event; False when it had been recorded before."""
    fresh = await records.record(event, topic)
    if fresh:
        log.info("recorded", request_id=event.request_id, event_type=event.event_type)
    else:
        log.debug("duplicate_event", request_id=event.request_id, event_id=str(event.event_id))
    return fresh
